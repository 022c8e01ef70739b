// The parts of a hit's ranking score, opened on demand; shared by the browse page and the
// live search page. Values are numbers and channel names, set as text only.
"use strict";
window.TuwenParts = {
  details(hit) {
    const make = (tag, className, text) => {
      const node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const details = make("details", "parts");
    details.append(make("summary", "", "分项 (parts)"));
    const list = make("ul");
    for (const [name, value] of hit.parts) {
      // Fused by rank (by=hybrid): each list's share, and the hit's rank in that list.
      const rank = hit.found_by && hit.found_by[name] ? " (#" + hit.found_by[name] + ")" : "";
      list.append(make("li", "part", name + rank + " " + (value >= 0 ? "+" : "") + value.toFixed(4)));
    }
    list.append(make("li", "part", "cosine " + hit.cosine.toFixed(4)));
    details.append(list);
    return details;
  },
};
