// syncbus admin: the little script the pages need beyond htmx (no inline script: the CSP forbids it).
(function () {
  "use strict";
  // "Select all" checkbox of a table: toggles the row checkboxes of the same table.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.hasAttribute("data-select-all")) return;
    var table = box.closest("table");
    if (!table) return;
    table.querySelectorAll('tbody input[type="checkbox"][name="ids"]').forEach(function (row) {
      row.checked = box.checked;
    });
  });
  // Forms with data-confirm ask before they are sent.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
})();
