/* target.html: an alert target's light curve (target.html?name=...): the
   plot (rapas/q/lcplot), its points from rapas.lightcurves (TAP), and its
   DataLink document. */
"use strict";
(() => {
  const {el, link, urls, get, showFailure} = rapas;
  const $ = id => document.getElementById(id);
  const name = rapas.param("name");
  const quoted = text => "'" + text.replace(/'/g, "''") + "'";

  rapas.header();
  show();

  async function show() {
    if (!name) return showFailure("No target was named: this page shows one target (target.html?name=...).");
    $("title").textContent = "Light curve of " + name;
    document.title = "RAPAS " + name;
    let target, points;
    try {
      target = (await get(urls.tap("SELECT ra, dec, kind, target_did FROM rapas.targets WHERE name="
        + quoted(name), "json"), "json")).data[0];
      if (!target) return showFailure("The network follows no target called " + name + ".");
      const query = "SELECT mjd, filter, mag, mag_err, mag_limit, observer, obs_id FROM rapas.lightcurves"
        + " WHERE target=" + quoted(name) + " ORDER BY mjd";
      points = (await get(urls.tap(query, "json"), "json")).data;
      $("archive-links").append(
        el("li", null, link(urls.lightCurveLinks(target[3]), "DataLink"), " — the light curve as a VOTable time series and more"),
        el("li", null, link(urls.tap(query), "The points (TAP)"), " — ", el("code", null, query)));
    } catch (error) {
      return showFailure("The light curve could not be read (" + error.message + ").");
    }
    const [ra, dec, kind] = target;
    $("status").textContent = (kind || "target") + " at RA " + rapas.fixed(ra, 5) + "°, Dec " + rapas.fixed(dec, 5)
      + "°; " + points.length + " point" + (points.length === 1 ? "" : "s");
    $("plot").src = urls.lightCurvePlot(target[3]);
    $("points").tBodies[0].replaceChildren(...points.map(([mjd, band, mag, err, limit, observer, obsId]) =>
      el("tr", null, el("td", null, rapas.fixed(mjd, 4)), el("td", null, band || ""),
         el("td", null, mag === null ? "> " + rapas.fixed(limit, 2) : rapas.fixed(mag, 3)),
         el("td", null, rapas.fixed(err, 3)), el("td", null, rapas.fixed(limit, 2)),
         el("td", null, observer || ""), el("td", null, link(urls.imagePage(obsId), obsId)))));
    $("result").hidden = false;
  }
})();
