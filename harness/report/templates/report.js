// Sortable tables, no dependencies: click a header to sort its column (again to reverse).
// A cell's data-sort attribute, when present, is its numeric sort key; otherwise its text.
(function () {
  "use strict";
  function key(row, index) {
    var cell = row.children[index];
    if (!cell) { return ""; }
    var raw = cell.getAttribute("data-sort");
    if (raw !== null && raw !== "" && !isNaN(Number(raw))) { return Number(raw); }
    return cell.textContent.trim().toLowerCase();
  }
  // Numbers compare as numbers; in a numeric column, text such as "no data" stays last in
  // both directions, so the cells with data remain on top.
  function compare(a, b, direction) {
    var numA = typeof a === "number", numB = typeof b === "number";
    if (numA && numB) { return direction * (a - b); }
    if (numA) { return -1; }
    if (numB) { return 1; }
    return direction * (a < b ? -1 : (a > b ? 1 : 0));
  }
  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      return compare(key(r1, index), key(r2, index), ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.children, function (other) {
      other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th").forEach(function (th) {
        th.addEventListener("click", function () { sortBy(table, th); });
      });
    });
  });
})();
