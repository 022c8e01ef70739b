// The live search page. Every id and caption is user data: it is only ever set as
// textContent or a property, never as HTML.
"use strict";
(function () {
  const form = document.getElementById("search");
  const input = document.getElementById("q");
  const gallerySelect = document.getElementById("gallery");
  const topInput = document.getElementById("k");
  // Rank by one channel alone: text:<encoder> channels rank captions by meaning.
  const bySelect = document.getElementById("by");
  const status = document.getElementById("status");
  // Which photos a search may answer with (tuwen.serve.loaded_run.Filters), by parameter name.
  const FILTERS = ["tag", "prefix", "after", "before", "format"];
  let galleries = {};
  let shownPreview = null;
  let maxBody = Infinity;  // the server's upload limit, from /api/galleries
  let duplicatesGallery = null;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(text, isError) {
    status.className = isError ? "error" : "";
    status.textContent = text;
  }

  async function loadGalleries() {
    const response = await fetch("/api/galleries");
    const data = await response.json();
    for (const gallery of data.galleries) {
      galleries[gallery.name] = gallery;
      const kind = gallery.kind === "images" ? "图像" : "文本";
      const option = element("option", "", gallery.name + "（" + kind + " " + gallery.items + "）");
      option.value = gallery.name;
      gallerySelect.append(option);
    }
    const meanings = new Set();
    for (const gallery of data.galleries) {
      for (const channel of gallery.by || []) if (channel.startsWith("text:")) meanings.add(channel);
    }
    for (const channel of [...meanings].sort()) {
      const option = element("option", "", "语义 " + channel);
      option.value = channel;
      bySelect.append(option);
    }
    // Keyword and meaning together, where a gallery's items have text (read in its photos).
    if (data.galleries.some((gallery) => (gallery.by || []).includes("hybrid"))) {
      const option = element("option", "", "关键词+语义 (hybrid)");
      option.value = "hybrid";
      bySelect.append(option);
    }
    const tags = new Set();
    for (const gallery of data.galleries) for (const tag of gallery.tags || []) tags.add(tag);
    const tagList = document.getElementById("tags");
    for (const tag of [...tags].sort()) {
      const option = element("option");
      option.value = tag;
      tagList.append(option);
    }
    // A gallery whose duplicates the run found: the button shows its groups.
    duplicatesGallery = (data.galleries.find((gallery) => gallery.duplicates) || {}).name || null;
    document.getElementById("duplicates").hidden = !duplicatesGallery;
    if (data.max_body) maxBody = data.max_body;
    const notice = document.getElementById("notice");
    notice.textContent = data.warning ? "注意 (warning): " + data.warning : "";
    notice.hidden = !data.warning;
    if (data.reload_error) say("结果可能已过时 (stale): " + data.reload_error, true);
  }

  function showQuery(answer) {
    const box = document.getElementById("query");
    box.replaceChildren();
    const query = answer.query;
    if (query.kind === "texts" && query.text !== undefined) {
      box.append(element("div", "query-text", query.text));
    } else if (query.collection && galleries[query.collection] && galleries[query.collection].kind === "images") {
      const image = element("img");
      image.src = "/image/" + encodeURIComponent(query.collection) + "/" + encodeURIComponent(query.id) + "?size=160";
      image.alt = query.id;
      box.append(image);
    } else if (shownPreview) {
      const image = element("img");
      image.src = shownPreview;
      image.alt = query.image || "";
      box.append(image);
    }
    if (query.id) box.append(element("div", "hit-id", query.collection + " / " + query.id));
    let line = "模型 " + answer.model + " · 排序 " + answer.ranked_by + " · 图库 " + answer.gallery;
    if (answer.not_applied.length) line += " · 未用: " + answer.not_applied.join("; ");
    if (answer.filter) {
      const asked = FILTERS.filter((name) => answer.filter[name] !== undefined);
      line += " · 筛选 " + asked.map((name) => name + "=" + answer.filter[name]).join(", ");
      line += " (" + answer.filter.matching + " 张符合)";
    }
    if (answer.timing) line += " · 编码 " + answer.timing.encode_ms.toFixed(1) + " ms";
    // An index's answer is approximate: say by which index, and the recall it was measured at.
    if (answer.exact === false) {
      const recall = answer.search["recall@10"];
      line += " · 近似检索 " + answer.search.index + (recall === undefined ? "" : " (recall@10 " + recall + ")");
    }
    box.append(element("div", "note", line));
  }

  function showHits(answer) {
    const list = document.getElementById("hits");
    list.replaceChildren();
    for (const hit of answer.hits) {
      const item = element("li", hit.correct ? "hit correct" : "hit");
      item.dataset.id = hit.id;
      item.dataset.rank = String(hit.rank);
      const line = element("div");
      line.append(element("span", "rank", "#" + hit.rank + " "));
      line.append(element("span", "score", hit.score.toFixed(4)));
      if (hit.correct) line.append(element("span", "mark", " ✓ 正确"));
      item.append(line);
      if (hit.parts) {
        const parts = window.TuwenParts.details(hit);
        // Opening the parts must not also search with the hit.
        parts.addEventListener("click", (event) => event.stopPropagation());
        item.append(parts);
      }
      if (hit.image !== undefined) {
        const image = element("img", "thumb");
        image.src = hit.image + "?size=256";
        image.alt = hit.id;
        image.loading = "lazy";
        item.append(image);
      } else {
        item.append(element("div", "hit-text", hit.caption));
      }
      item.append(element("div", "hit-id", hit.id));
      item.title = "以此检索 (more like this)";
      item.addEventListener("click", () => like(answer.gallery, hit.id));
      list.append(item);
    }
  }

  async function run(url, options) {
    say("检索中…");
    const started = performance.now();
    let response;
    try {
      response = await fetch(url, options);
    } catch (failure) {
      say("无法连接服务: " + failure, true);
      return;
    }
    const answer = await response.json();
    if (!response.ok) {
      say("错误 " + response.status + ": " + answer.error, true);
      return;
    }
    showQuery(answer);
    showHits(answer);
    const took = Math.round(performance.now() - started);
    say(answer.hits.length + " 个结果 · " + took + " ms" + (answer.reload_error ? " · 结果可能已过时" : ""));
    document.body.dataset.answered = String(Date.now());
  }

  function params(extra) {
    const values = new URLSearchParams(extra);
    if (gallerySelect.value && !values.has("gallery")) values.set("gallery", gallerySelect.value);
    values.set("k", topInput.value || "10");
    if (bySelect.value && !values.has("by")) values.set("by", bySelect.value);
    for (const name of FILTERS) {
      const value = document.getElementById(name).value.trim();
      if (value && !values.has(name)) values.set(name, value);
    }
    return values;
  }

  function searchText(text) {
    shownPreview = null;
    const values = params({ q: text });
    history.replaceState(null, "", "/?" + values.toString());
    run("/api/search?" + values.toString());
  }

  function like(gallery, id) {
    shownPreview = null;
    const values = params({ like: id, of: gallery, gallery: gallery });
    history.replaceState(null, "", "/?" + values.toString());
    run("/api/search?" + values.toString());
  }

  function searchImage(file) {
    if (!file) return;
    if (file.size > maxBody) {
      // Refused here, before it uploads: the server would refuse it with 413 after reading it.
      say("错误 413: the image is " + file.size + " bytes, over the limit of " + maxBody + " bytes", true);
      return;
    }
    if (shownPreview) URL.revokeObjectURL(shownPreview);
    shownPreview = URL.createObjectURL(file);
    const body = new FormData();
    body.append("image", file);
    history.replaceState(null, "", "/");
    run("/api/search?" + params({}).toString(), { method: "POST", body: body });
  }

  async function showDuplicates() {
    const chosen = galleries[gallerySelect.value];
    const gallery = chosen && chosen.duplicates ? chosen.name : duplicatesGallery;
    say("读取重复照片…");
    const response = await fetch("/api/duplicates?gallery=" + encodeURIComponent(gallery));
    const answer = await response.json();
    if (!response.ok) {
      say("错误 " + response.status + ": " + answer.error, true);
      return;
    }
    document.getElementById("query").replaceChildren(element("div", "note", "重复照片 · 图库 " + gallery));
    const list = document.getElementById("hits");
    list.replaceChildren();
    for (const group of answer.groups) {
      const item = element("li", "hit group");
      item.dataset.group = String(group.group);
      item.append(element("div", "rank", "组 " + group.group));
      for (const copy of group.items) {
        const image = element("img", "thumb");
        image.src = copy.image + "?size=128";
        image.alt = copy.id;
        item.append(image);
        const kind = copy.kind === "first" ? "原图" : copy.kind === "exact" ? "完全相同" : "近似 " + copy.distance;
        item.append(element("div", "hit-id", copy.id + " · " + kind));
      }
      list.append(item);
    }
    say(answer.groups.length + " 组重复");
    document.body.dataset.answered = String(Date.now());
  }

  document.getElementById("duplicates").addEventListener("click", showDuplicates);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) searchText(input.value);
  });
  document.getElementById("image").addEventListener("change", (event) => searchImage(event.target.files[0]));
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchImage(event.dataTransfer.files[0]);
  });

  loadGalleries().then(() => {
    // A query in the address runs on load, so a result can be linked.
    const start = new URLSearchParams(location.search);
    if (start.get("gallery") && galleries[start.get("gallery")]) gallerySelect.value = start.get("gallery");
    if (start.get("k")) topInput.value = start.get("k");
    if (start.get("by")) bySelect.value = start.get("by");
    for (const name of FILTERS) if (start.get(name)) document.getElementById(name).value = start.get(name);
    if (start.get("q")) {
      input.value = start.get("q");
      searchText(start.get("q"));
    } else if (start.get("like") && start.get("of")) {
      run("/api/search?" + start.toString());
    }
    document.body.dataset.ready = "true";
  }, (failure) => say("无法读取图库: " + failure, true));
})();
