/* image.html: one archived frame (image.html?obs_id=...): its calibration
   summary, preview and plots from the product files, and its archive
   links (DataLink, SIAP2, TAP). */
"use strict";
(() => {
  const {urls, get, showFailure} = rapas;
  const $ = id => document.getElementById(id);
  const obsId = rapas.param("obs_id");

  rapas.header();
  show();

  async function show() {
    if (!obsId) return showFailure("No frame was named: this page shows one frame (image.html?obs_id=...).");
    $("title").textContent = "Frame " + obsId;
    document.title = "RAPAS frame " + obsId;
    const query = "SELECT publisher_did, object_name, observer, telescope FROM rapas.images WHERE obs_id='"
      + obsId.replace(/'/g, "''") + "'";
    let rows, summary;
    try {
      rows = (await get(urls.tap(query, "json"), "json")).data;
      if (!rows.length) return showFailure("There is no frame " + obsId + " in the archive: it may have been withdrawn.");
      summary = await get(urls.file(obsId, "summary.json"), "json");
    } catch (error) {
      return showFailure("The frame's summary could not be read (" + error.message + ").");
    }
    const [pubDID, object, observer, telescope] = rows[0];
    $("status").textContent = [object, observer && "observed by " + observer, telescope && "with " + telescope]
      .filter(Boolean).join(", ");
    $("card").replaceChildren(rapas.summaryCard(summary));
    const {plots, files} = rapas.productViews(summary.products, name => urls.file(obsId, name));
    $("plot-area").replaceChildren(plots);
    $("product-list").replaceChildren(files);
    const links = rapas.archiveLinks(obsId, pubDID);
    links.firstChild.remove();                  // the link to this very page
    $("archive").replaceChildren(links);
    $("result").hidden = false;
  }
})();
