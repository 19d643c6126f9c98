/* RAPAS Archive pages: what job.html, jobs.html, image.html and target.html
   share.  The pages read the archive's own services (the reduction's UWS
   job documents, the product files, TAP) from the same server.  This
   directory is served twice: as rapas/q/web/static/ (public: image.html,
   target.html) and as rapas/q/reduce/static/ (behind the reduction
   service's login: job.html, jobs.html); every address is relative to
   rapas/q/, so a site mounted under a path prefix works too.  Text from
   the archive goes into the page as text (textContent), never as markup. */
"use strict";

const rapas = (() => {
  const UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0";
  // without the user:password@ a login URL may carry (fetch refuses such URLs)
  const here = new URL(".", location.origin + location.pathname);
  const rd = new URL("../../", here);            // rapas/q/
  const site = new URL("../../../../", here);    // the server's root

  const q = encodeURIComponent;
  const urls = {
    form: new URL("reduce/form", rd).href,
    jobs: new URL("reduce/async", rd).href,
    job: id => new URL("reduce/async/" + q(id), rd).href,
    result: (id, name) => new URL("reduce/async/" + q(id) + "/results/" + q(name), rd).href,
    jobPage: id => new URL("reduce/static/job.html?job=" + q(id), rd).href,
    jobList: new URL("reduce/static/jobs.html", rd).href,
    imagePage: obsId => new URL("web/static/image.html?obs_id=" + q(obsId), rd).href,
    file: (obsId, name) => new URL("files/static/" + q(obsId) + "/" + q(name), rd).href,
    datalink: pubDID => new URL("dl/dlmeta?ID=" + q(pubDID), rd).href,
    siap2: pubDID => new URL("siap2/siap2.xml?ID=" + q(pubDID), rd).href,
    browse: new URL("browse/form", rd).href,
    lightCurvePlot: targetDID => new URL("lcplot/dlget?ID=" + q(targetDID), rd).href,
    lightCurveLinks: targetDID => new URL("lcdl/dlmeta?ID=" + q(targetDID), rd).href,
    tap: (query, format) => new URL("tap/sync?LANG=ADQL&REQUEST=doQuery"
      + (format ? "&RESPONSEFORMAT=" + q(format) : "") + "&QUERY=" + q(query), site).href,
    home: site.href,
  };

  /** An element: el("a", {href: ...}, "text", child, ...); null children are left out. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function link(href, text) { return el("a", {href}, text); }

  /** The body of a same-origin GET (the member's login travels with it); an Error with the status otherwise. */
  async function get(url, as) {
    const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) {
      const error = new Error(url + ": HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return as === "json" ? response.json() : response.text();
  }

  /** A UWS 1.1 job document as {id, phase, creationTime, startTime, endTime, parameters, results, error}. */
  function parseJob(text) {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const one = name => {
      const node = doc.getElementsByTagNameNS(UWS_NS, name)[0];
      const value = node ? node.textContent.trim() : "";
      return value || null;
    };
    const parameters = {};
    for (const p of doc.getElementsByTagNameNS(UWS_NS, "parameter")) {
      const value = p.textContent.trim();
      if (value && value !== "None") parameters[p.getAttribute("id")] = value;
    }
    const results = [...doc.getElementsByTagNameNS(UWS_NS, "result")].map(
      r => ({name: r.getAttribute("id"), type: r.getAttribute("mime-type") || ""}));
    return {id: one("jobId"), phase: one("phase"), creationTime: one("creationTime"),
            startTime: one("startTime"), endTime: one("endTime"), parameters, results, error: one("message")};
  }

  /** A UWS job list as [{id, phase}], newest first as the server lists them. */
  function parseJobList(text) {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    return [...doc.getElementsByTagNameNS(UWS_NS, "jobref")].map(ref => ({
      id: ref.getAttribute("id"),
      phase: (ref.getElementsByTagNameNS(UWS_NS, "phase")[0] || {}).textContent || ""}));
  }

  const FINAL = new Set(["COMPLETED", "ERROR", "ABORTED", "ARCHIVED"]);

  /** The pipeline's stages from its log (processing/logbook.py's lines:
      "TIME  STAGE  message"; "stages: a, b, ..." first, then "stage X
      started", "stage X done in S s (CPU C s)", "ERROR: why"). */
  function parseLog(text) {
    const stages = [];
    const byName = {};
    for (const line of text.split("\n")) {
      const match = line.match(/^(\S+)\s+(\S+)\s+(.*)$/);
      if (!match) continue;
      const [, , name, message] = match;
      if (name === "start" && message.startsWith("stages: ")) {
        for (const stage of message.slice(8).split(", ")) {
          if (!byName[stage]) stages.push(byName[stage] = {name: stage, state: "pending", message: "", seconds: null});
        }
        continue;
      }
      const stage = byName[name];
      if (!stage) continue;
      const done = message.match(/^stage \S+ done in ([\d.]+) s/);
      if (message === "stage " + name + " started") stage.state = "running";
      else if (done) { stage.state = "done"; stage.seconds = parseFloat(done[1]); }
      else if (message.startsWith("ERROR: ")) { stage.state = "failed"; stage.message = message.slice(7); }
      else stage.message = message;
    }
    return stages;
  }

  function fixed(value, digits) {
    return (value === null || value === undefined || !isFinite(value)) ? "—" : Number(value).toFixed(digits);
  }
  function withError(value, error, digits) {
    return value === null || value === undefined ? "—"
      : fixed(value, digits) + (error === null || error === undefined ? "" : " ± " + fixed(error, digits));
  }

  /** The enrichment services' outcome in a few words: "simbad 12, vsx 3; off: skybot". */
  function enrichmentStatus(enrichment) {
    const used = [], off = [], failed = [];
    for (const [name, e] of Object.entries(enrichment || {})) {
      if (e.status === "ok") used.push(name + " " + e.matched);
      else if (e.status === "disabled") off.push(name);
      else failed.push(name + " (" + (e.message || e.status) + ")");
    }
    const parts = [];
    if (used.length) parts.push(used.join(", "));
    if (failed.length) parts.push("unavailable: " + failed.join(", "));
    if (off.length) parts.push("off: " + off.join(", "));
    return parts.join("; ") || "—";
  }

  /** The calibration summary card of a reduced frame (summary.json). */
  function summaryCard(s) {
    const colour = s.colour_term === null || s.colour_term === undefined ? "—"
      : withError(s.colour_term, s.colour_term_err, 3) + " × (" + (s.colour_index || "BP-RP") + ")";
    const items = [
      ["Band", (s.filter || "—") + (s.calibration_band ? " (calibrated on " + s.calibration_band + ")" : ""), "band"],
      ["Zero point (mag)", withError(s.zero_point, s.zero_point_err, 3), "zero_point"],
      ["Colour term", colour, "colour_term"],
      ["Limiting magnitude (5σ)", fixed(s.limiting_mag_5sigma, 2), "limiting_mag"],
      ["FWHM", fixed(s.fwhm_arcsec, 2) + "″ (" + fixed(s.fwhm_px, 2) + " px)", "fwhm"],
      ["Astrometric RMS", fixed(s.astrometric_rms_arcsec, 2) + "″ (" + (s.n_astrometric_stars ?? "—") + " stars)", "astrometric_rms"],
      ["Sources", s.n_sources ?? "—", "n_sources"],
      ["Calibrators", s.n_calibrators ?? "—", "n_calibrators"],
      ["Observed (UTC)", (s.date_obs || "—").replace("T", " ").slice(0, 19), "date_obs"],
      ["Exposure", s.exptime === null || s.exptime === undefined ? "—" : s.exptime + " s", "exptime"],
      ["Catalogue enrichment", enrichmentStatus(s.enrichment), "enrichment"],
    ];
    if (s.calibration_error) items.splice(1, 0, ["Not calibrated", s.calibration_error, "calibration_error"]);
    return el("dl", {class: "card", id: "summary"},
      items.map(([label, value, key]) => el("div", {"data-key": key}, el("dt", null, label), el("dd", null, value))));
  }

  /** The products of a reduction: images inline (the preview first), the rest as links. */
  function productViews(products, urlOf) {
    const images = products.filter(p => p.media_type === "image/png")
      .sort((a, b) => (b.semantics === "#preview") - (a.semantics === "#preview"));
    const plots = el("div", {class: "plots", id: "plots"}, images.map(p => el("figure", null,
      el("a", {href: urlOf(p.name)}, el("img", {src: urlOf(p.name), alt: p.description || p.name, loading: "lazy"})),
      el("figcaption", null, p.description || p.name))));
    const files = el("ul", {class: "links", id: "products"}, products.map(p =>
      el("li", null, link(urlOf(p.name), p.name), " — " + (p.description || p.media_type))));
    return {plots, files};
  }

  /** Where a frame is in the archive: its page, DataLink, SIAP2 and a TAP query of its sources. */
  function archiveLinks(obsId, pubDID) {
    const query = "SELECT * FROM rapas.sources WHERE obs_id='" + obsId.replace(/'/g, "''") + "'";
    return el("ul", {class: "links", id: "archive-links"},
      el("li", null, link(urls.imagePage(obsId), "The frame's page"), " — its summary and plots in the archive"),
      pubDID ? el("li", null, link(urls.datalink(pubDID), "DataLink"), " — every product of the frame (VO DataLink)") : null,
      pubDID ? el("li", null, link(urls.siap2(pubDID), "SIAP2"), " — the frame's ObsCore record (VOTable)") : null,
      el("li", null, link(urls.tap(query), "Its sources (TAP)"), " — ", el("code", null, query)));
  }

  /** The page's header: the site and the pages an observer moves between. */
  function header() {
    document.body.prepend(el("header", null,
      el("a", {href: urls.home, class: "site"}, "RAPAS Archive"),
      link(urls.form, "Reduce a frame"),
      link(urls.jobList, "My jobs"),
      link(urls.browse, "Search images")));
  }

  function param(name) { return new URLSearchParams(location.search).get(name); }

  /** The page's failure box (#failure): the one-line reason (#reason), what
      to do (#advice, where the page has one); the status line (#status) cleared. */
  function showFailure(reason, advice) {
    const node = id => document.getElementById(id);
    if (node("status")) node("status").textContent = "";
    node("reason").textContent = reason;
    if (advice) node("advice").replaceChildren(advice);
    node("failure").hidden = false;
  }

  return {urls, el, link, get, parseJob, parseJobList, parseLog, summaryCard, productViews, archiveLinks,
          header, param, fixed, showFailure, FINAL};
})();
