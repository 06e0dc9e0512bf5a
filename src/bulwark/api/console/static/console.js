// The console's only script besides htmx: open and close <dialog> elements from buttons.
// Pages work without it, except that dialogs then stay closed.
(function () {
  "use strict";
  function dialog(id) { return document.getElementById(id); }
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var d = dialog(opener.getAttribute("data-open-dialog"));
      if (d && !d.open) { d.showModal(); var field = d.querySelector("textarea, input:not([type=hidden])"); if (field) field.focus(); }
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      var c = dialog(closer.getAttribute("data-close-dialog"));
      if (c) c.close();
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    // A refused submit comes back with its dialog open, so the user sees the error and the comment.
    document.querySelectorAll("dialog[data-open-on-load]").forEach(function (d) { d.showModal(); });
  });
})();
