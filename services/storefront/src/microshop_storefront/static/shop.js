// microshop storefront: small progressive enhancement; every page works without it.
// Search as you type: on the catalog page the search box asks for the results only and swaps them in.
(function () {
  "use strict";
  var input = document.querySelector("[data-live-search]");
  var results = document.getElementById("results");
  if (!input || !results || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var timer = null;
  var latest = 0;
  input.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      var params = new URLSearchParams(window.location.search);
      var q = input.value.trim();
      if (q) { params.set("q", q); } else { params.delete("q"); }
      params.delete("page");
      var shown = params.toString();
      params.set("partial", "1");
      var ticket = ++latest;
      fetch("/catalog?" + params.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null || ticket !== latest) { return; }
          results.innerHTML = html;
          window.history.replaceState(null, "", "/catalog" + (shown ? "?" + shown : ""));
        })
        .catch(function () { /* the form still submits normally */ });
    }, 250);
  });
})();
