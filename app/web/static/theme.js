// Runs before the page paints (not deferred): the chosen theme, or the system's, from the start.
(function () {
  var chosen = localStorage.getItem("rackhand-theme");
  if (chosen === "dark" || chosen === "light") {
    document.documentElement.setAttribute("data-theme", chosen);
  }
})();
