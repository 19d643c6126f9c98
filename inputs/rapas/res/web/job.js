/* job.html: one reduction job, live.  Polls the job's UWS document and its
   growing log (the "rapas.log" result) until the job ends, then shows the
   calibration summary, the preview and plots, the products and where the
   frame is in the archive; a failed job shows its one-line reason. */
"use strict";
(() => {
  const {el, link, urls, get, showFailure} = rapas;
  const POLL_MS = 1500;
  const LOG = "rapas.log";
  const jobId = rapas.param("job");
  const $ = id => document.getElementById(id);
  let clock = null;

  rapas.header();
  if (!jobId) {
    showFailure("No job was named: this page shows one reduction job (job.html?job=ID).",
                el("span", null, "Pick one from ", link(urls.jobList, "your jobs"), "."));
    return;
  }
  $("job-id").textContent = jobId;
  document.title = "RAPAS reduction " + jobId;
  poll();

  async function poll() {
    let job;
    try {
      job = rapas.parseJob(await get(urls.job(jobId)));
    } catch (error) {
      if (error.status === 404) {
        showPhase("UNKNOWN");
        $("stages").replaceChildren();
        showFailure("There is no job " + jobId + " of yours: it was deleted or has expired, or it is another member's.",
                    el("span", null, "See ", link(urls.jobList, "your jobs"), "."));
      } else if (error.status === 401 || error.status === 403) {
        showFailure("This job is only shown to the member who submitted it: log in as that member.",
                    el("span", null, link(urls.jobList, "Log in and see your jobs"), "."));
      } else {
        setTimeout(poll, 2 * POLL_MS);        // the server restarting: try again
      }
      return;
    }
    showPhase(job.phase);
    showClock(job);
    showOptions(job.parameters);
    if (job.results.some(r => r.name === LOG)) await showLog();
    if (!rapas.FINAL.has(job.phase)) {
      setTimeout(poll, POLL_MS);
    } else if (job.phase === "COMPLETED") {
      await showResult(job);
    } else if (job.phase === "ABORTED") {
      showFailure("The job was aborted before it finished; nothing was stored.", submitAgain());
    } else {
      showFailure(job.error || "The reduction failed.", submitAgain());
    }
  }

  function showPhase(phase) {
    $("phase").textContent = phase;
    $("phase").className = "phase " + phase;
  }

  /** Time since the job started (or was created), still counting while it runs. */
  function showClock(job) {
    const start = Date.parse(job.startTime || job.creationTime);
    const end = job.endTime ? Date.parse(job.endTime) : null;
    const render = () => {
      const seconds = Math.max(0, ((end || Date.now()) - start) / 1000);
      $("elapsed").textContent = job.phase === "PENDING" ? "not started: a PENDING job runs once it is sent PHASE=RUN"
        : (job.startTime || end ? (end ? "took " : "running for ") : "waiting for a free slot, ")
          + seconds.toFixed(0) + " s";
    };
    clearInterval(clock);
    render();
    if (!end && !isNaN(start)) clock = setInterval(render, 1000);
  }

  function showOptions(parameters) {
    const given = Object.entries(parameters).filter(([name]) => name !== "image")
      .map(([name, value]) => name + " = " + value);
    $("options").textContent = "Options: " + (given.length ? given.join(", ") + "; the others at their defaults"
      : "all at their defaults") + ".";
  }

  async function showLog() {
    let text;
    try {
      text = await get(urls.result(jobId, LOG));
    } catch (error) {
      return;                                 // not written yet
    }
    $("log").textContent = text;
    const frame = text.split("\n", 1)[0].match(/ on (.+)$/);      // "... RAPAS pipeline 0.1.0 on NAME"
    if (frame) $("frame").textContent = frame[1] + " ·";
    const stages = rapas.parseLog(text);
    if (!stages.length) return;
    $("stages").replaceChildren(...stages.map(stage => el("li", {class: stage.state, "data-stage": stage.name},
      el("span", {class: "name"}, stage.name), " ",
      el("span", {class: "state"}, stage.state === "done" ? rapas.fixed(stage.seconds, 1) + " s" : stage.state),
      stage.message ? el("span", {class: "message"}, stage.message) : null)));
  }

  async function showResult(job) {
    const names = new Set(job.results.map(r => r.name));
    let summary, archived = null;
    try {
      summary = await get(urls.result(jobId, "summary.json"), "json");
      if (names.has("archive.json")) archived = await get(urls.result(jobId, "archive.json"), "json");
    } catch (error) {
      showFailure("The job completed, but its summary could not be read (" + error.message + ").", submitAgain());
      return;
    }
    $("card").replaceChildren(rapas.summaryCard(summary));
    const products = summary.products.filter(p => names.has(p.name));
    const {plots, files} = rapas.productViews(products, name => urls.result(jobId, name));
    $("plot-area").replaceChildren(plots);
    $("product-list").replaceChildren(files);
    const obsId = archived ? archived.obs_id : summary.obs_id;
    $("archive").replaceChildren(rapas.archiveLinks(obsId, archived && archived.obs_publisher_did));
    if (summary.warnings && summary.warnings.length) {
      $("card").append(el("p", {class: "muted", id: "warnings"}, "Warnings: " + summary.warnings.join("; ")));
    }
    $("result").hidden = false;
  }

  function submitAgain() {
    return el("span", null, "Fix what the line above says and ", link(urls.form, "submit the frame again"),
              "; the reduction log below shows each step the pipeline took.");
  }
})();
