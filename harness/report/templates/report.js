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
  function compare(a, b) {
    var numA = typeof a === "number", numB = typeof b === "number";
    if (numA && numB) { return a - b; }
    if (numA) { return -1; }  // numbers before text such as "no data"
    if (numB) { return 1; }
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var result = compare(key(r1, index), key(r2, index));
      return ascending ? result : -result;
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
