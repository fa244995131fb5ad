// forum: small progressive enhancements on top of htmx. Every page works without this file.
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  if (!window.htmx) return;
  // Show our short error fragments in place instead of silently ignoring 4xx/5xx answers.
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "[45]..", swap: true, error: true },
  ];
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
