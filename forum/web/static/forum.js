// forum: small progressive enhancements on top of htmx. Every page works without this file.
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  if (!window.htmx) return;
  // htmx's settings are in <meta name="htmx-config"> (base.html): no eval, and error fragments swap in.
  // Keep keyboard focus on the button that was just replaced (vote, follow).
  var focusKey = null;
  document.body.addEventListener("htmx:beforeSwap", function () {
    var active = document.activeElement;
    focusKey = active && active.dataset ? active.dataset.focusKey || null : null;
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (!focusKey) return;
    var again = document.querySelector('[data-focus-key="' + focusKey + '"]');
    if (again) again.focus();
    focusKey = null;
  });
});
