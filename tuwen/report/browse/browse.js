// Renders window.TUWEN_BROWSE (data.js). Every id and caption is user data: it is only
// ever set as textContent or a property, never as HTML.
"use strict";
(function () {
  const data = window.TUWEN_BROWSE;
  const PER_PAGE = 50;
  const state = { task: Object.keys(data.tasks)[0], filter: "", page: 1 };
  // A run that ranks with random weights says so above every result.
  if (data.notice) {
    const notice = document.getElementById("notice");
    notice.textContent = "注意 (warning): " + data.notice;
    notice.hidden = false;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function picture(item) {
    if (!item.thumb) return element("div", "no-thumb", "无缩略图");
    const image = element("img", "thumb");
    image.src = item.thumb;
    image.alt = item.id;
    image.loading = "lazy";
    return image;
  }

  function matches(query, filter) {
    if (!filter) return true;
    const needle = filter.toLowerCase();
    return query.id.toLowerCase().includes(needle) || (query.text || "").toLowerCase().includes(needle);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (data.tasks[params.get("task")]) state.task = params.get("task");
    state.filter = params.get("q") || "";
    state.page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  }

  function writeHash() {
    const params = new URLSearchParams({ task: state.task, q: state.filter, page: String(state.page) });
    history.replaceState(null, "", "#" + params.toString());
  }

  function renderQuery(query) {
    const section = element("section", "query");
    section.dataset.id = query.id;
    const head = element("div", "query-item");
    head.append(element("div", "query-id", query.id));
    head.append(query.text !== undefined ? element("div", "query-text", query.text) : picture(query));
    if (query.has_truth && !query.hits.some((hit) => hit.correct)) {
      head.append(element("div", "miss", "正确答案不在前 " + data.shown + " 名"));
    }
    section.append(head);
    const list = element("ol", "hits");
    for (const hit of query.hits) {
      const item = element("li", hit.correct ? "hit correct" : "hit");
      item.dataset.id = hit.id;
      item.dataset.rank = String(hit.rank);
      item.dataset.score = hit.score.toFixed(4);
      const line = element("div");
      line.append(element("span", "rank", "#" + hit.rank + " "));
      // The score that ranks: the cosine, or the fused score whose parts open on demand.
      line.append(element("span", "score", hit.score.toFixed(4)));
      if (hit.correct) line.append(element("span", "mark", " ✓ 正确"));
      item.append(line);
      if (hit.parts) item.append(window.TuwenParts.details(hit));
      item.append(hit.text !== undefined ? element("div", "hit-text", hit.text) : picture(hit));
      item.append(element("div", "hit-id", hit.id));
      list.append(item);
    }
    section.append(list);
    return section;
  }

  function render() {
    const tabs = document.getElementById("tasks");
    tabs.replaceChildren();
    for (const [task, spec] of Object.entries(data.tasks)) {
      const button = element("button", task === state.task ? "active" : "", spec.title);
      button.dataset.task = task;
      button.addEventListener("click", () => { state.task = task; state.page = 1; update(); });
      tabs.append(button);
    }
    const shown = data.tasks[state.task].queries.filter((query) => matches(query, state.filter));
    const pages = Math.max(1, Math.ceil(shown.length / PER_PAGE));
    state.page = Math.min(state.page, pages);
    const list = document.getElementById("queries");
    list.replaceChildren(...shown.slice((state.page - 1) * PER_PAGE, state.page * PER_PAGE).map(renderQuery));
    document.getElementById("count").textContent = shown.length + " 个查询";
    const pager = document.getElementById("pager");
    pager.replaceChildren();
    const previous = element("button", "", "上一页");
    previous.disabled = state.page <= 1;
    previous.addEventListener("click", () => { state.page -= 1; update(); });
    const next = element("button", "", "下一页");
    next.disabled = state.page >= pages;
    next.addEventListener("click", () => { state.page += 1; update(); });
    pager.append(previous, element("span", "page", "第 " + state.page + " / " + pages + " 页"), next);
  }

  function update() {
    writeHash();
    render();
  }

  const filter = document.getElementById("filter");
  readHash();
  filter.value = state.filter;
  filter.addEventListener("input", () => { state.filter = filter.value; state.page = 1; update(); });
  window.addEventListener("hashchange", () => { readHash(); filter.value = state.filter; render(); });
  render();
})();
