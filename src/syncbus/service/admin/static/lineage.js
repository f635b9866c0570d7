// syncbus admin: the external object's editor checks its JSON as it is typed and before it is
// sent (the server checks again and says what the connector made of it).
(function () {
  "use strict";
  function problem(text) {
    if (!text.trim()) return "The external object is empty: type the object as JSON.";
    try {
      JSON.parse(text);
      return null;
    } catch (err) {
      return "Not valid JSON: " + err.message + ". Nothing was changed.";
    }
  }
  function show(area, message) {
    var out = document.getElementById(area.getAttribute("aria-describedby"));
    if (message) area.setAttribute("aria-invalid", "true");
    else area.removeAttribute("aria-invalid");
    if (!out) return;
    out.textContent = message || "";
    out.hidden = !message;
  }
  function editorOf(form) {
    return form.hasAttribute("data-json-editor") ? form.querySelector("textarea") : null;
  }
  document.addEventListener("input", function (event) {
    var area = event.target;
    if (area instanceof HTMLTextAreaElement && area.form && editorOf(area.form) === area) {
      show(area, problem(area.value));
    }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var area = editorOf(form);
    if (!area) return;
    var message = problem(area.value);
    if (message) {
      event.preventDefault();
      show(area, message);
      area.focus();
    }
  });
})();
