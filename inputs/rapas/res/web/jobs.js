/* jobs.html: the logged-in member's reduction jobs, newest first, with the
   key numbers of each finished one (from its summary.json result) or the
   reason it failed.  Jobs still running are read again until they end. */
"use strict";
(() => {
  const {el, link, urls, get} = rapas;
  const SHOWN = 30;
  const POLL_MS = 3000;
  const $ = id => document.getElementById(id);

  rapas.header();
  load();

  async function load() {
    let jobs;
    try {
      jobs = rapas.parseJobList(await get(urls.jobs + "?LAST=" + SHOWN));
    } catch (error) {
      $("status").textContent = error.status === 401 || error.status === 403
        ? "Log in as a member of the network to see your jobs."
        : "Your jobs could not be read (" + error.message + ").";
      return;
    }
    if (!jobs.length) {
      $("status").replaceChildren("You have no reduction jobs. ", link(urls.form, "Reduce a frame"), ".");
      return;
    }
    const rows = await Promise.all(jobs.map(row));
    $("jobs").tBodies[0].replaceChildren(...rows.map(r => r.tr));
    $("jobs").hidden = false;
    $("status").textContent = jobs.length + " job" + (jobs.length > 1 ? "s" : "") + ", newest first.";
    if (rows.some(r => !rapas.FINAL.has(r.phase))) setTimeout(load, POLL_MS);
  }

  /** One job's table row: {tr, phase}. */
  async function row(ref) {
    let job = null, summary = null;
    try {
      job = rapas.parseJob(await get(urls.job(ref.id)));
      if (job.phase === "COMPLETED") summary = await get(urls.result(ref.id, "summary.json"), "json");
    } catch (error) {
      // a job deleted meanwhile: its row says what the list said
    }
    const phase = job ? job.phase : ref.phase;
    const s = summary || {};
    const last = summary ? link(urls.imagePage(s.obs_id), s.obs_id)
      : job && job.error ? el("span", {class: "reason"}, job.error) : "";
    const tr = el("tr", {"data-job": ref.id},
      el("td", null, link(urls.jobPage(ref.id), ref.id)),
      el("td", null, el("span", {class: "phase " + phase}, phase)),
      el("td", null, job && job.creationTime ? job.creationTime.replace("T", " ").slice(0, 19) : ""),
      el("td", null, s.filter || ""),
      el("td", null, summary ? rapas.fixed(s.zero_point, 3) : ""),
      el("td", null, summary ? rapas.fixed(s.limiting_mag_5sigma, 2) : ""),
      el("td", null, summary ? rapas.fixed(s.fwhm_arcsec, 2) + "″" : ""),
      el("td", null, summary ? s.n_sources : ""),
      el("td", {style: "white-space: normal"}, last));
    return {tr, phase};
  }
})();
