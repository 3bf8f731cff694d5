// Progressive enhancement only: every page works without it. A form marked data-once
// submits once; a second click while the first submit is on its way does nothing.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.hasAttribute("data-once")) return;
  if (form.getAttribute("data-submitted") === "1") {
    event.preventDefault();
    return;
  }
  form.setAttribute("data-submitted", "1");
  form.setAttribute("aria-busy", "true");
});
// Coming back with the browser's Back button shows the page as it was left: submittable again.
window.addEventListener("pageshow", function () {
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.removeAttribute("data-submitted");
    form.removeAttribute("aria-busy");
  });
});
