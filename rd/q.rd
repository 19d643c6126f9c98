<resource schema="rapas" resdir="rapas">
  <meta name="creationDate">2026-11-25T00:00:00Z</meta>
  <meta name="title">RAPAS transient follow-up images and photometry</meta>
  <meta name="description">
    Calibrated images and their photometric source catalogues from the RAPAS
    professional-amateur network, which follows up transients (GRB
    afterglows, kilonovae, supernovae, novae) with Gaia-compatible G, BP and
    RP filters.  Each submitted frame is reduced server-side: WCS refined
    against Gaia DR3 (or solved blind with Astrometry.net), aperture and PSF
    photometry, zero point and BP-RP colour term fitted on Gaia DR3.
  </meta>
  <meta name="subject">transient-sources</meta>
  <meta name="subject">photometry</meta>
  <meta name="subject">gamma-ray-bursts</meta>
  <meta name="subject">supernovae</meta>
  <meta name="creator">RAPAS network</meta>
  <meta name="facility">RAPAS network telescopes</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Archive</meta>
  <meta name="coverage.waveband">Optical</meta>

  <table id="images" onDisk="True" mixin="//siap#pgs" adql="True" primary="obs_id">
    <meta name="description">One row per reduced RAPAS frame: where and when
      it was taken, how it was calibrated, and how deep it goes.  The
      calibrated FITS is the access_url; its sources are in rapas.sources
      (join on obs_id).</meta>
    <mixin
      calibLevel="calib_level"
      collectionName="'RAPAS'"
      targetName="object_name"
      expTime="exptime"
      tMin="t_min"
      tMax="t_max"
      sResolution="fwhm"
      fov="fov"
      facilityName="telescope"
      instrumentName="instId"
      obsId="obs_id"
      oUCD="'phot.count;em.opt'"
      >//obscore#publishSIAP</mixin>
    <meta name="_associatedDatalinkService">
      <meta name="serviceId">dl</meta>
      <meta name="idColumn">publisher_did</meta>
    </meta>

    <!-- SIAP2's TIME is "hi >= t_min AND t_max >= lo": either index serves -->
    <index columns="t_min"/>
    <index columns="t_max"/>
    <column name="obs_id" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Obs. id" verbLevel="1"
      description="RAPAS identifier of the frame: 'rapas-' and the first 16
        hex digits of the SHA-256 of the submitted file"/>
    <column name="publisher_did" type="text" ucd="meta.ref.ivoid" tablehead="Pub. DID"
      verbLevel="15" description="IVOA publisher dataset identifier of the calibrated image (ivoa.obscore.obs_publisher_did;
        DataLink takes it as ID)"/>
    <column name="object_name" type="text" ucd="meta.id;src" tablehead="Object"
      verbLevel="5" description="Target name from the OBJECT header keyword"/>
    <column name="observer" type="text" ucd="meta.id.PI" tablehead="Observer"
      verbLevel="10" description="Observer from the OBSERVER keyword"/>
    <column name="submitted_by" type="text" ucd="meta.id" tablehead="Submitted by"
      verbLevel="20" description="The network member whose job archived the frame (NULL when an
        administrator ingested it); only they can replace it"/>
    <column name="telescope" type="text" ucd="instr.tel" tablehead="Telescope"
      verbLevel="10" description="Telescope from the TELESCOP keyword"/>
    <column name="instrument_key" type="text" ucd="meta.id;instr" tablehead="Instrument key"
      verbLevel="10" description="Telescope / camera / band ('unknown' for a missing keyword): frames
        with the same key share their colour term and depth (rapas.instruments)"/>
    <column name="filter" type="text" ucd="meta.id;instr.filter" tablehead="Filter"
      verbLevel="1" description="RAPAS canonical band (G, BP, RP, Johnson-Cousins, SDSS or CLEAR)"/>
    <column name="calib_level" type="smallint" required="True" ucd="meta.code;obs.calib"
      tablehead="Calib. level" verbLevel="5"
      description="2: astrometrically and photometrically calibrated; 1: WCS only, the photometric
        calibration failed (zero point NULL, see calibration_error; the sources carry instrumental
        magnitudes only)"/>
    <column name="calibration_error" type="text" ucd="meta.note" tablehead="Calibration error"
      verbLevel="15" description="Why a calibration-level-1 image has no zero point; NULL otherwise"/>
    <column name="calibration_band" type="text" ucd="meta.ref;instr.filter"
      tablehead="Cal. band" verbLevel="15"
      description="Gaia DR3 band the zero point refers to"/>
    <column name="t_min" type="double precision" unit="d" ucd="time.start;obs.exposure"
      tablehead="Start (MJD)" verbLevel="10" description="Start of the exposure, MJD (UTC)"/>
    <column name="t_max" type="double precision" unit="d" ucd="time.end;obs.exposure"
      tablehead="End (MJD)" verbLevel="10" description="End of the exposure, MJD (UTC)"/>
    <column name="exptime" type="real" unit="s" ucd="time.duration;obs.exposure"
      tablehead="Exp. time" verbLevel="1" description="Exposure time"/>
    <column name="airmass" type="real" ucd="obs.airMass" tablehead="Airmass"
      verbLevel="10" description="Airmass at mid-exposure (header or computed)"/>
    <column name="fov" type="double precision" unit="deg" ucd="phys.angSize;instr.fov"
      tablehead="FoV" verbLevel="15" description="Diameter of the circle enclosing the image"/>
    <column name="fwhm" type="real" unit="arcsec" ucd="phys.angSize;instr.det.psf"
      tablehead="FWHM" verbLevel="1" description="PSF full width at half maximum"/>
    <column name="ellipticity" type="real" ucd="src.ellipticity;instr.det.psf"
      tablehead="Ellipticity" verbLevel="15" description="Median 1 - b/a of the PSF stars"/>
    <column name="zero_point" type="double precision" unit="mag" ucd="phot.mag;arith.zp"
      tablehead="ZP" verbLevel="5"
      description="Zero point at the frame centre: mag = ZP - 2.5 log10(ADU/s) + colour_term (BP-RP), total flux"/>
    <column name="zero_point_err" type="real" unit="mag" ucd="stat.error;phot.mag;arith.zp"
      tablehead="ZP err" verbLevel="5" description="Error of zero_point"/>
    <column name="colour_term" type="real" ucd="arith.factor;phot.color"
      tablehead="Colour term" verbLevel="10" description="Colour term in Gaia BP-RP"/>
    <column name="colour_term_err" type="real" ucd="stat.error;phot.color"
      tablehead="Colour term err" verbLevel="15" description="Error of colour_term"/>
    <column name="colour_term_source" type="text" ucd="meta.code" tablehead="Colour term from"
      verbLevel="15" description="fit (the frame's own), or its instrument's registered value (rapas.instruments)
        when the frame's own was poorly constrained (error above 0.03 or calibrators spanning less than 0.2 mag
        in BP-RP)"/>
    <column name="n_calibrators" type="integer" ucd="meta.number;phot.calib"
      tablehead="N cal" verbLevel="15" description="Gaia stars used in the zero-point fit">
      <values nullLiteral="-1"/>
    </column>
    <column name="limiting_mag" type="real" unit="mag" ucd="phot.mag;stat.max"
      tablehead="Lim. mag" verbLevel="1"
      description="5-sigma limiting magnitude of a point source, from the noise of PSF fits at empty positions
        (of calibration apertures when the frame has no PSF model); summary.json says which"/>
    <column name="n_sources" type="integer" ucd="meta.number;src"
      tablehead="N src" verbLevel="5" description="Sources in rapas.sources for this image">
      <values nullLiteral="-1"/>
    </column>
    <column name="astrometric_rms" type="real" unit="arcsec" ucd="stat.stdev;pos.eq"
      tablehead="Astrom. RMS" verbLevel="10"
      description="RMS of catalogue minus WCS positions of the reference stars"/>
    <column name="wcs_source" type="text" ucd="meta.code" tablehead="WCS from"
      verbLevel="15" description="header (kept), refined (header refined on Gaia) or solved (blind, Astrometry.net)"/>
    <column name="pipeline_version" type="text" ucd="meta.version;meta.software"
      tablehead="Pipeline" verbLevel="20" description="RAPAS pipeline version"/>
    <column name="processing_time" type="real" unit="s" ucd="time.duration;meta.software"
      tablehead="Proc. time" verbLevel="20" description="Wall time of the reduction"/>
    <column name="checksum" type="text" ucd="meta.checksum" tablehead="SHA-256"
      verbLevel="25" description="SHA-256 of the submitted file"/>
    <column name="warnings" type="text" ucd="meta.note" tablehead="Warnings"
      verbLevel="25" description="Pipeline warnings (defaults used, steps skipped), one per line"/>
    <column name="enrichment_missing" type="text" ucd="meta.note" tablehead="Enrichment missing"
      verbLevel="15" description="Catalogue services that were unavailable when the sources were
        cross-identified (comma-separated: simbad, vsx, milliquas, skybot, colibri); NULL when
        all answered.  Such images can be enriched again (rapas-enrich)."/>
    <column name="n_notable" type="integer" ucd="meta.number;src" tablehead="N notable"
      verbLevel="10" description="Notable objects in the field (rapas.notable: variables, quasars,
        minor planets, alert transients)">
      <values nullLiteral="-1"/>
    </column>
  </table>

  <table id="instruments" onDisk="True" adql="True">
    <meta name="description">The network's colour-term registry: for each
      instrument key (telescope / camera / band) of the archived,
      photometrically calibrated frames, its colour term (weighted mean and
      scatter), zero point and depth, and over which time.  The frames
      themselves, in time order, are rapas.images with that
      instrument_key.</meta>
    <column original="images.instrument_key" verbLevel="1"/>
    <column original="images.telescope" verbLevel="1"/>
    <column name="instrument" type="text" ucd="meta.id;instr" tablehead="Camera" verbLevel="1"
      description="Camera from the INSTRUME keyword"/>
    <column original="images.filter" verbLevel="1"/>
    <column name="n_images" type="integer" ucd="meta.number;obs" tablehead="N images" verbLevel="1" required="True"
      description="Calibrated frames with this key that fitted their own colour term"/>
    <column name="first_mjd" type="double precision" unit="d" ucd="time.start" tablehead="First (MJD)"
      verbLevel="5" description="Start of the first frame"/>
    <column name="last_mjd" type="double precision" unit="d" ucd="time.end" tablehead="Last (MJD)"
      verbLevel="5" description="End of the last frame"/>
    <column name="colour_term" type="double precision" ucd="arith.factor;phot.color" tablehead="Colour term"
      verbLevel="1" description="Inverse-variance weighted mean colour term (Gaia BP-RP) of the frames"/>
    <column name="colour_term_err" type="double precision" ucd="stat.error;phot.color" tablehead="Err"
      verbLevel="5" description="Error of the weighted mean colour term"/>
    <column name="colour_term_scatter" type="double precision" ucd="stat.stdev;phot.color" tablehead="Scatter"
      verbLevel="5" description="Standard deviation of the frames' colour terms"/>
    <column name="zero_point" type="double precision" unit="mag" ucd="phot.mag;arith.zp" tablehead="ZP"
      verbLevel="5" description="Mean zero point (it depends on exposure conditions: see its scatter)"/>
    <column name="zero_point_scatter" type="double precision" unit="mag" ucd="stat.stdev;phot.mag;arith.zp"
      tablehead="ZP scatter" verbLevel="10" description="Standard deviation of the zero points"/>
    <column name="limiting_mag" type="double precision" unit="mag" ucd="phot.mag;stat.max" tablehead="Lim. mag"
      verbLevel="5" description="Mean 5-sigma limiting magnitude of the frames"/>
    <column name="limiting_mag_best" type="double precision" unit="mag" ucd="phot.mag;stat.max"
      tablehead="Deepest" verbLevel="10" description="Deepest 5-sigma limit reached"/>
    <column name="fwhm" type="double precision" unit="arcsec" ucd="phys.angSize;instr.det.psf"
      tablehead="FWHM" verbLevel="10" description="Mean PSF FWHM"/>
    <viewStatement>
      CREATE VIEW \qName (\colNames) AS (
        SELECT instrument_key, MIN(telescope), MIN(instId), MIN(filter), COUNT(*)::integer,
          MIN(t_min), MAX(t_max),
          SUM(colour_term / (colour_term_err * colour_term_err)) FILTER (WHERE colour_term_err > 0)
            / NULLIF(SUM(1 / (colour_term_err * colour_term_err)) FILTER (WHERE colour_term_err > 0), 0),
          1 / SQRT(NULLIF(SUM(1 / (colour_term_err * colour_term_err)) FILTER (WHERE colour_term_err > 0), 0)),
          STDDEV(colour_term), AVG(zero_point), STDDEV(zero_point), AVG(limiting_mag), MAX(limiting_mag),
          AVG(fwhm)
        FROM \schema.images WHERE calib_level = 2 AND COALESCE(colour_term_source, 'fit') = 'fit'
        GROUP BY instrument_key)
    </viewStatement>
  </table>

  <table id="notable" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <meta name="description">Notable objects in the field of each RAPAS
      image: known variable stars (VSX) and quasars (Milliquas) matched to a
      source, solar-system bodies in the field at mid-exposure (SkyBoT) and
      transients or alerts under follow-up (Astro-COLIBRI), whether detected
      or not.  Join with rapas.images on obs_id, with rapas.sources on
      source_id.</meta>
    <foreignKey inTable="images" source="obs_id" dest="obs_id"/>
    <index columns="obs_id"/>
    <index columns="name"/>
    <column name="obs_id" type="text" required="True" ucd="meta.id;obs"
      tablehead="Obs. id" verbLevel="1" description="Image whose field holds the object"/>
    <column name="catalogue" type="text" required="True" ucd="meta.ref"
      tablehead="Catalogue" verbLevel="1" description="Where it comes from: vsx, milliquas, skybot or colibri"/>
    <column name="name" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Name" verbLevel="1" description="The object's name in that catalogue"/>
    <column name="kind" type="text" ucd="src.class" tablehead="Kind" verbLevel="1"
      description="variable star, quasar, minor planet, comet or transient"/>
    <column name="object_type" type="text" ucd="src.class" tablehead="Type" verbLevel="5"
      description="The catalogue's own type or class"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main"
      tablehead="RA" verbLevel="1" required="True"
      description="Right ascension (ICRS) from the catalogue (for SkyBoT: at mid-exposure, topocentric when the site is known)"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main"
      tablehead="Dec" verbLevel="1" required="True" description="Declination (ICRS), as ra"/>
    <column name="mag" type="real" unit="mag" ucd="phot.mag" tablehead="Mag" verbLevel="10"
      description="Catalogue magnitude (SkyBoT V, Milliquas R)"/>
    <column name="redshift" type="real" ucd="src.redshift" tablehead="z" verbLevel="10"
      description="Redshift (Milliquas)"/>
    <column name="error_radius" type="real" unit="arcsec" ucd="stat.error;pos"
      tablehead="Pos. error" verbLevel="15" description="Position error (SkyBoT ephemeris, alert error circle)"/>
    <column name="event_time" type="text" ucd="time.epoch" tablehead="Event time" verbLevel="15"
      description="Time of the alert (Astro-COLIBRI), ISO 8601 UTC"/>
    <column name="source_id" type="text" ucd="meta.id.cross" tablehead="Source" verbLevel="5"
      description="The matched RAPAS source (rapas.sources.source_id), NULL if none"/>
    <column name="separation" type="real" unit="arcsec" ucd="pos.angDistance"
      tablehead="Sep." verbLevel="15" description="Distance to the matched source"/>
  </table>

  <!-- The sources table is the archive's big one (10^9 rows for a
    ten-year network).  Its position index is q3c's, not pgSphere's: DaCHS
    then turns ADQL CONTAINS into q3c_join (and the cone search into
    q3c_radial_query), whose row estimates follow the cone's area, so the
    planner joins a cone's few rows to rapas.images by nested loop at any
    size; pgSphere estimates every cone at 0.1 % of the table and hashes
    the whole images table.  The identifier columns from the enrichment
    have partial indexes (only their non-NULL rows).  Statistics are
    refreshed by PostgreSQL's autovacuum once 1 % of the rows have changed,
    not by an ANALYZE after every image (res/ingest.py copies the rows in
    with COPY).  make bench-archive measures all this. -->
  <table id="sources" onDisk="True" adql="True" mixin="//scs#q3cindex">
    <meta name="description">Photometric sources detected on the RAPAS images,
      one row per source per image, calibrated on Gaia DR3.  Join with
      rapas.images on obs_id for the observation time and filter.</meta>
    <foreignKey inTable="images" source="obs_id" dest="obs_id"/>
    <index columns="obs_id"/>
    <index columns="source_id"/>
    <LOOP listItems="gaia_source_id vsx_name simbad_id milliquas_name">
      <events>
        <index columns="\item"><option>WHERE \item IS NOT NULL</option></index>
      </events>
    </LOOP>
    <script type="postCreation" lang="SQL" name="statistics by volume">
      ALTER TABLE \qName SET (autovacuum_analyze_scale_factor = 0.01)
    </script>
    <column name="source_id" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Source" verbLevel="1" description="Archive-wide source identifier: obs_id and the running number"/>
    <column name="obs_id" type="text" required="True" ucd="meta.id;obs"
      tablehead="Obs. id" verbLevel="1" description="Image this source was measured on (rapas.images.obs_id)"/>
    <!-- the pipeline's catalogue columns, from the pipeline-archive
      contract (processing/contract.py, linked as res/contract.py) -->
    <LOOP>
      <codeItems>
        contract, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/contract")
        yield from contract.rd_column_items()
      </codeItems>
      <events passivate="True">
        <column name="\name" type="\type" unit="\unit" ucd="\ucd" tablehead="\tablehead"
            verbLevel="\verb" required="\required" description="\description">
          <!-- integer columns that may be NULL name their null literal -->
          <LOOP listItems="\null"><events><values nullLiteral="\null"/></events></LOOP>
        </column>
      </events>
    </LOOP>
  </table>


  <table id="targets" onDisk="True" adql="True" primary="name" mixin="//scs#pgs-pos-index">
    <meta name="description">Alert targets the RAPAS network follows up
      (GRB afterglows, supernovae, kilonovae, novae, variables): every
      archived image covering one is measured there by forced photometry,
      which makes its light curve (rapas.lightcurves; DataLink from
      target_did).  Members add, edit and retire targets with the
      rapas/q/target_edit service; Astro-COLIBRI alerts with a position error of
      10 arcsec or less found in a frame's field are added
      automatically.</meta>
    <meta name="_associatedDatalinkService">
      <meta name="serviceId">lcdl</meta>
      <meta name="idColumn">target_did</meta>
    </meta>
    <column name="name" type="text" required="True" ucd="meta.id;meta.main" tablehead="Target"
      verbLevel="1" description="Target name (the alert's, e.g. GRB 261130A, SN 2026abc)"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" tablehead="RA"
      verbLevel="1" required="True" description="Right ascension (ICRS) where the target is measured"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" tablehead="Dec"
      verbLevel="1" required="True" description="Declination (ICRS) where the target is measured"/>
    <column name="pos_error" type="real" unit="arcsec" ucd="stat.error;pos" tablehead="Pos. error"
      verbLevel="5" description="Error radius of the position"/>
    <column name="kind" type="text" ucd="src.class" tablehead="Kind" verbLevel="1"
      description="GRB, SN, KN, nova, variable or other"/>
    <column name="alert_mjd" type="double precision" unit="d" ucd="time.epoch" tablehead="Alert (MJD)"
      verbLevel="5" description="Time of the alert or event (MJD, UTC); light-curve times t_alert count from it"/>
    <column name="origin" type="text" ucd="meta.ref" tablehead="Origin" verbLevel="10"
      description="Where the target comes from: Astro-COLIBRI, TNS, GCN or member"/>
    <column name="added_by" type="text" ucd="meta.id.PI" tablehead="Added by" verbLevel="10"
      description="Member who added it, or the enrichment of the frame that found the alert"/>
    <column name="modified_by" type="text" ucd="meta.id.PI" tablehead="Modified by" verbLevel="20"
      description="Member who changed it last"/>
    <column name="created" type="timestamp" ucd="time.creation" tablehead="Created" verbLevel="15"
      description="When it was added (UTC)"/>
    <column name="modified" type="timestamp" ucd="time.processing" tablehead="Modified" verbLevel="15"
      description="When it was changed last (UTC)"/>
    <column name="retired" type="timestamp" ucd="time.end" tablehead="Retired" verbLevel="10"
      description="When it was retired (no longer measured on new images; its light curve stays); NULL while active"/>
    <column name="backfill" type="text" ucd="meta.note" tablehead="Backfill" verbLevel="10"
      description="Forced photometry on the images archived before the target: pending, measuring (progress),
        done or failed (why)"/>
    <column name="backfill_at" type="timestamp" ucd="time.processing" tablehead="Backfill at" verbLevel="20"
      description="When the backfill last reported its progress (UTC)"/>
    <column name="target_did" type="text" ucd="meta.ref.ivoid" tablehead="DID" verbLevel="15"
      description="Identifier of the target's light curve for the DataLink service (rapas/q/lcdl)"/>
  </table>

  <table id="lightcurves" onDisk="True" adql="True" primary="target,obs_id">
    <meta name="description">Forced photometry of the alert targets
      (rapas.targets) on every archived image that covers them, one row per
      target and image, from every observer: a calibrated flux and its
      error always (negative where the sky there is fainter than its local
      median: keep them for stacking), a magnitude where S/N &gt;= 3, and the
      5-sigma upper limit from the local noise at the target's position.
      Each row carries its image's calibration provenance.  The target's
      colour is unknown: it is calibrated at the calibrators' median BP-RP
      (calibration_colour); mag_calib_err includes the colour term times the
      calibrators' colour spread.</meta>
    <foreignKey inTable="images" source="obs_id" dest="obs_id"/>
    <foreignKey inTable="targets" source="target" dest="name"/>
    <index columns="target"/>
    <index columns="obs_id"/>
    <column name="target" type="text" required="True" ucd="meta.id;src" tablehead="Target" verbLevel="1"
      description="Target name (rapas.targets.name)"/>
    <column name="obs_id" type="text" required="True" ucd="meta.id;obs" tablehead="Obs. id" verbLevel="1"
      description="Image measured (rapas.images.obs_id)"/>
    <column name="mjd" type="double precision" unit="d" ucd="time.epoch" tablehead="MJD" verbLevel="1"
      description="Mid-exposure time, MJD (UTC)"/>
    <column name="t_alert" type="double precision" unit="d" ucd="time.interval" tablehead="t - t_alert"
      verbLevel="5" description="Days since the target's alert time (NULL without one)"/>
    <column name="filter" type="text" ucd="meta.id;instr.filter" tablehead="Filter" verbLevel="1"
      description="The image's band"/>
    <column name="flux" type="double precision" ucd="phot.flux;em.opt" tablehead="Flux" verbLevel="1"
      description="Calibrated flux at the fixed position, on a zero point of 25 mag: mag = 25 - 2.5 log10(flux)
        (PSF fit with the image's own model, else the calibration aperture; total flux); may be negative"/>
    <column name="flux_err" type="double precision" ucd="stat.error;phot.flux;em.opt" tablehead="Flux err"
      verbLevel="1" description="Measurement error of flux: local sky noise, the source's photons, the sky
        level's error and the correction to total flux"/>
    <column name="snr" type="real" ucd="stat.snr" tablehead="S/N" verbLevel="1" description="flux / flux_err"/>
    <column name="mag" type="real" unit="mag" ucd="phot.mag;em.opt" tablehead="Mag" verbLevel="1"
      description="Calibrated magnitude where snr &gt;= 3; NULL below (see mag_limit)"/>
    <column name="mag_err" type="real" unit="mag" ucd="stat.error;phot.mag;em.opt" tablehead="Mag err"
      verbLevel="1" description="Measurement error of mag: 1.0857 flux_err / flux"/>
    <column name="mag_calib_err" type="real" unit="mag" ucd="stat.error.sys;phot.mag;em.opt"
      tablehead="Calib err" verbLevel="5" description="Calibration error at the position: zero point, the
        calibrators' scatter and the unknown colour (colour term times the calibrators' BP-RP spread)"/>
    <column name="mag_limit" type="real" unit="mag" ucd="phot.mag;stat.max" tablehead="5-sigma limit"
      verbLevel="1" description="5-sigma upper limit at the position, from the local noise (not the image's
        global limit, image_limit)"/>
    <column name="method" type="text" ucd="meta.code" tablehead="Method" verbLevel="10"
      description="Which measurement flux is: PSF (fixed-position fit with the image's ePSF) or aperture (the
        calibration aperture), the one with the smaller error (the PSF's for faint targets)"/>
    <column name="flux_ap" type="double precision" ucd="phot.flux;em.opt" tablehead="Flux (ap.)"
      verbLevel="15" description="Calibrated flux in the calibration aperture, corrected to total (zero point 25)"/>
    <column name="flux_ap_err" type="double precision" ucd="stat.error;phot.flux;em.opt"
      tablehead="Flux err (ap.)" verbLevel="15" description="Measurement error of flux_ap (the aperture
        correction's included)"/>
    <column name="x_image" type="real" unit="pix" ucd="pos.cartesian.x;instr.det" tablehead="x" verbLevel="20"
      description="Position on the image (FITS pixels, first is 1)"/>
    <column name="y_image" type="real" unit="pix" ucd="pos.cartesian.y;instr.det" tablehead="y" verbLevel="20"
      description="Position on the image (FITS pixels, first is 1)"/>
    <column name="sky" type="real" unit="adu" ucd="instr.skyLevel" tablehead="Sky" verbLevel="20"
      description="Local sky level (clipped median in the sky annulus), ADU per pixel"/>
    <column name="noise" type="real" unit="adu" ucd="stat.stdev;instr.skyLevel" tablehead="Sky noise"
      verbLevel="20" description="Local sky noise per pixel (clipped standard deviation in the annulus)"/>
    <column name="observer" type="text" ucd="meta.id.PI" tablehead="Observer" verbLevel="5"
      description="The image's observer"/>
    <column name="telescope" type="text" ucd="instr.tel" tablehead="Telescope" verbLevel="5"
      description="The image's telescope"/>
    <column name="instrument" type="text" ucd="meta.id;instr" tablehead="Instrument" verbLevel="10"
      description="The image's camera"/>
    <column name="exptime" type="real" unit="s" ucd="time.duration;obs.exposure" tablehead="Exp. time"
      verbLevel="10" description="Exposure time"/>
    <column name="airmass" type="real" ucd="obs.airMass" tablehead="Airmass" verbLevel="15"
      description="Airmass at mid-exposure"/>
    <column name="fwhm" type="real" unit="arcsec" ucd="phys.angSize;instr.det.psf" tablehead="FWHM"
      verbLevel="10" description="The image's PSF FWHM"/>
    <column name="image_limit" type="real" unit="mag" ucd="phot.mag;stat.max" tablehead="Image limit"
      verbLevel="15" description="The image's global 5-sigma limiting magnitude"/>
    <column name="zero_point" type="double precision" unit="mag" ucd="phot.mag;arith.zp" tablehead="ZP"
      verbLevel="10" description="The image's zero point at its centre (total flux, colour 0)"/>
    <column name="zero_point_err" type="real" unit="mag" ucd="stat.error;phot.mag;arith.zp"
      tablehead="ZP err" verbLevel="15" description="Error of zero_point"/>
    <column name="colour_term" type="real" ucd="arith.factor;phot.color" tablehead="Colour term"
      verbLevel="15" description="The image's colour term in Gaia BP-RP"/>
    <column name="calibration_colour" type="real" unit="mag" ucd="phot.color;em.opt.B;em.opt.R"
      tablehead="Cal. BP-RP" verbLevel="15" description="BP-RP the target is calibrated at (the calibrators'
        median: its own colour is unknown)"/>
    <column name="calibration_intrinsic_rms" type="real" unit="mag" ucd="stat.stdev;phot.mag"
      tablehead="Cal. scatter" verbLevel="20" description="The calibrators' star-to-star scatter beyond their errors"/>
    <column name="calibration_band" type="text" ucd="meta.ref;instr.filter" tablehead="Cal. band"
      verbLevel="20" description="Gaia DR3 band of the zero point"/>
    <column name="refcat" type="text" ucd="meta.ref" tablehead="Ref. cat." verbLevel="20"
      description="Reference catalogue of the calibration"/>
    <column name="pipeline_version" type="text" ucd="meta.version;meta.software" tablehead="Pipeline"
      verbLevel="20" description="RAPAS pipeline version that reduced the image"/>
    <column name="measured_at" type="timestamp" ucd="time.processing" tablehead="Measured" verbLevel="25"
      description="When the forced photometry ran (UTC)"/>
    <column name="note" type="text" ucd="meta.note" tablehead="Note" verbLevel="10"
      description="Why there is no measurement (masked position, uncalibrated image), NULL otherwise"/>
  </table>

  <table id="withdrawals" onDisk="True" primary="obs_id,withdrawn_at">
    <meta name="description">The audit trail of images withdrawn from the
      archive (res/ingest.py --remove by an administrator, or a member's
      own through rapas/q/withdraw): one row per withdrawal.  Not
      published.</meta>
    <column name="obs_id" type="text" required="True" ucd="meta.id;obs" description="The withdrawn image"/>
    <column name="withdrawn_at" type="timestamp" required="True" ucd="time.processing"
      description="When it was withdrawn (UTC)"/>
    <column name="withdrawn_by" type="text" required="True" ucd="meta.id"
      description="The member who withdrew it, or 'administrator'"/>
    <column name="submitted_by" type="text" ucd="meta.id" description="The member who had submitted it"/>
    <column name="reason" type="text" ucd="meta.note" description="Why, as given"/>
    <column name="checksum" type="text" ucd="meta.checksum" description="SHA-256 of the submitted file"/>
  </table>

  <!-- The archive's tables exist from "dachs imp rapas/q" on (an
    existing table keeps its rows).  Their rows come only through
    res/ingest.py, one transaction per image: the image row and the
    notable objects through the two data elements below (makeData with
    the staged file as forceSource), the sources with one COPY built from
    the contract's column list (ingest.copy_sources).  ingest.py's
    catch-up option ingests the product directories in data/ that are not
    in the tables (after "dachs drop rapas/q", say), its "all" option every
    one again (see its docstring). -->
  <data id="create_archive" updating="True">
    <make table="images"/>
    <make table="sources"/>
    <make table="notable"/>
  </data>

  <data id="import_images" updating="True" auto="False">
    <sources pattern="data/*/calibrated.fits"/>
    <fitsProdGrammar qnd="True">
      <rowfilter procDef="//products#define">
        <bind key="table">"\schema.images"</bind>
        <!-- the archive's place of the products, data/OBS_ID/: res/ingest.py
          reads them from a staging directory beside data/ and moves them
          there once the rows are committed -->
        <bind key="accref">"\rdId".split("/")[0] + "/data/" + \inputRelativePath{False}.split("/")[-2] + "/calibrated.fits"</bind>
        <bind key="path">None</bind>
        <!-- the pipeline's own preview.png, beside the FITS -->
        <bind key="preview">"\rdId".split("/")[0] + "/data/" + \inputRelativePath{False}.split("/")[-2] + "/preview.png"</bind>
        <bind key="preview_mime">"image/png"</bind>
      </rowfilter>
    </fitsProdGrammar>
    <make table="images">
      <rowmaker>
        <apply name="readSummary">
          <doc>The pipeline's summary.json beside the FITS has the calibration;
            the directory the ingestion put the products in is named by the
            obs_id (as for the sources and notable objects).</doc>
          <code>
            import json, os
            with open(os.path.join(os.path.dirname(\fullPath), "summary.json")) as f:
              vars["summary"] = json.load(f)
          </code>
        </apply>
        <apply procDef="//siap#setMeta">
          <bind key="dateObs">vars["summary"]["mjd_mid"]</bind>
          <bind key="bandpassId">vars["summary"]["filter"]</bind>
          <bind key="bandpassUnit">"m"</bind>
          <bind key="bandpassLo">vars["summary"]["em_min"]</bind>
          <bind key="bandpassHi">vars["summary"]["em_max"]</bind>
          <bind key="bandpassRefval">0.5*(vars["summary"]["em_min"]+vars["summary"]["em_max"])</bind>
          <bind key="instrument">vars["summary"]["instrument"] or "unknown"</bind>
          <bind key="title">"RAPAS {} {} {} {}".format(
            vars["summary"]["object"] or "field", vars["summary"]["filter"],
            vars["summary"]["date_obs"][:19], vars["summary"]["telescope"] or "")</bind>
        </apply>
        <apply procDef="//siap#computePGS"/>
        <apply name="fillColumns">
          <code>
            s = vars["summary"]
            result["obs_id"] = os.path.basename(os.path.dirname(\fullPath))
            result["publisher_did"] = getStandardPubDID(vars["prodtblAccref"])
            for dest, key in [("object_name", "object"), ("observer", "observer"),
                ("telescope", "telescope"), ("filter", "filter"),
                ("calibration_band", "calibration_band"), ("t_min", "mjd_start"),
                ("t_max", "mjd_end"), ("exptime", "exptime"), ("airmass", "airmass"),
                ("fwhm", "fwhm_arcsec"), ("ellipticity", "ellipticity"),
                ("zero_point", "zero_point"), ("zero_point_err", "zero_point_err"),
                ("colour_term", "colour_term"), ("colour_term_err", "colour_term_err"),
                ("n_calibrators", "n_calibrators"), ("limiting_mag", "limiting_mag_5sigma"),
                ("n_sources", "n_sources"), ("astrometric_rms", "astrometric_rms_arcsec"),
                ("wcs_source", "wcs_source"), ("pipeline_version", "pipeline_version"),
                ("processing_time", "processing_time_s"), ("checksum", "checksum_sha256"),
                ("fov", "fov_deg"), ("calibration_error", "calibration_error")]:
              value = s.get(key)
              result[dest] = None if isinstance(value, float) and value != value else value
            result["calib_level"] = s.get("calib_level", 2)
            contract, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/contract")
            result["instrument_key"] = contract.instrument_key(s.get("telescope"), s.get("instrument"),
              s.get("filter"))
            result["colour_term_source"] = s.get("colour_term_source")
            result["warnings"] = "\n".join(s.get("warnings") or []) or None
            result["enrichment_missing"] = ",".join(s.get("enrichment_missing") or []) or None
            result["n_notable"] = len(s.get("notable_objects") or [])
            submitter = os.path.join(os.path.dirname(\fullPath), "submitter.txt")
            result["submitted_by"] = open(submitter).read().strip() if os.path.exists(submitter) else None
          </code>
        </apply>
      </rowmaker>
    </make>
  </data>

  <data id="import_notable" updating="True" auto="False">
    <sources pattern="data/*/summary.json"/>
    <embeddedGrammar>
      <iterator>
        <code>
          import json, os
          obsId = os.path.basename(os.path.dirname(self.sourceToken))
          with open(self.sourceToken) as f:
            summary = json.load(f)
          for item in summary.get("notable_objects") or []:
            row = dict(item, obs_id=obsId)
            if item.get("source_num"):
              row["source_id"] = "%s-%06d" % (obsId, item["source_num"])
            yield row
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="notable">
      <rowmaker>
        <map key="obs_id">@obs_id</map>
        <map key="catalogue">@catalogue</map>
        <map key="name">@name</map>
        <map key="ra">@ra</map>
        <map key="dec">@dec</map>
        <map key="kind">@kind</map>
        <map key="object_type" nullExpr="''">@object_type</map>
        <map key="mag" nullExcs="KeyError">@mag</map>
        <map key="redshift" nullExcs="KeyError">@redshift</map>
        <map key="error_radius" nullExcs="KeyError">@error_arcsec</map>
        <map key="event_time" nullExcs="KeyError">@event_time</map>
        <map key="source_id" nullExcs="KeyError">@source_id</map>
        <map key="separation" nullExcs="KeyError">@separation_arcsec</map>
      </rowmaker>
    </make>
  </data>


  <!-- the follow-up tables exist from "dachs imp rapas/q" on; their rows
    come from the ingestion and the target service (res/lightcurve.py) -->
  <data id="create_followup" updating="True">
    <make table="targets"/>
    <make table="lightcurves"/>
    <make table="withdrawals"/>
  </data>

  <data id="create_views">
    <make table="instruments"/>
  </data>

  <data id="import_forced" updating="True" auto="False">
    <dictlistGrammar/>
    <make table="lightcurves">
      <rowmaker idmaps="*"/>
    </make>
  </data>

  <!-- sky (MOC), time and spectral coverage of the holdings for the
    Registry records: "dachs limits rapas/q" computes them ("make publish");
    the times from ObsCore, whose t_min/t_max DaCHS knows to be MJD -->
  <coverage>
    <updater sourceTable="images" timeTable="//obscore#ObsCore"/>
    <spatial/>
    <temporal/>
    <spectral/>
  </coverage>

  <service id="siap2" allowed="siap2.xml,form">
    <meta name="shortName">RAPAS SIAP2</meta>
    <meta name="sia.type">Pointed</meta>
    <meta name="title">RAPAS images (SIAP version 2)</meta>
    <meta name="description">Calibrated RAPAS frames through SIAP2, from the
      archive's ObsCore table restricted to the RAPAS collection.</meta>
    <meta name="testQuery.pos.ra">150.0</meta>
    <meta name="testQuery.pos.dec">20.0</meta>
    <meta name="testQuery.size.ra">0.1</meta>
    <meta name="testQuery.size.dec">0.1</meta>
    <publish render="siap2.xml" sets="ivo_managed"/>
    <publish render="form" sets="local"/>
    <dbCore queriedTable="//obscore#ObsCore">
      <FEED source="//siap2#parameters"/>
      <condDesc combining="True">
        <phraseMaker>
          <code>
            yield "obs_collection='RAPAS'"
          </code>
        </phraseMaker>
      </condDesc>
    </dbCore>
  </service>

  <service id="browse" allowed="form">
    <meta name="shortName">RAPAS images</meta>
    <meta name="title">RAPAS image search</meta>
    <meta name="description">Find RAPAS frames by position or object name,
      filter, time and depth.  Each row links to the frame's page (its
      calibration summary and plots), its preview, the calibrated FITS and
      its DataLink document.</meta>
    <meta name="_intro" format="plain">A position is RA, Dec in degrees
      (e.g. 150.1, 2.2) or sexagesimal; a name is looked up among the
      network's alert targets, then with SIMBAD (Sesame) when the archive
      can reach it.</meta>
    <publish render="form" sets="local"/>
    <property name="fixedFormat">True</property>
    <dbCore queriedTable="images">
      <!-- //siap#humanInput, with names of the network's targets and
        notable objects resolved locally, and an unreachable Sesame said -->
      <condDesc joiner="AND">
        <inputKey original="//siap#base_POS" name="hPOS"
          description="RA, Dec in degrees (e.g. 150.1, 2.2), sexagesimal, or an object name"/>
        <inputKey original="//siap#base_SIZE" name="hSIZE">
          <values default="0.5"/>
        </inputKey>
        <inputKey original="//siap#base_INTERSECT" name="hINTERSECT">
          <values original="//siap#base_INTERSECT_values" default="OVERLAPS"/>
        </inputKey>
        <phraseMaker>
          <setup original="//siap#baseSetup"/>
          <setup>
            <code>
              names, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/names")
            </code>
          </setup>
          <code>
            ra, dec = names.resolve(inPars["hPOS"], "hPOS")
            inPars = {"POS": "%f, %f" % (ra, dec), "SIZE": inPars["hSIZE"],
              "INTERSECT": inPars["hINTERSECT"], "FORMAT": None}
            yield siap.getQuery(getQueriedTable(inputKeys), inPars, outPars)
          </code>
        </phraseMaker>
      </condDesc>
      <condDesc buildFrom="filter"/>
      <condDesc buildFrom="limiting_mag"/>
      <condDesc buildFrom="t_min"/>
      <condDesc buildFrom="object_name"/>
    </dbCore>
    <!-- what an observer looks at first: when, what, which band, by whom,
      how deep and sharp; then the frame's page, preview, files -->
    <outputTable>
      <outputField original="dateObs" tablehead="Observed (UTC)"/>
      <outputField original="object_name"/>
      <outputField original="filter"/>
      <outputField original="observer"/>
      <outputField original="limiting_mag" displayHint="type=fixed,sf=2"/>
      <outputField original="fwhm" displayHint="type=fixed,sf=1"/>
      <outputField original="zero_point" displayHint="type=fixed,sf=3"/>
      <outputField original="n_sources"/>
      <outputField name="preview" select="accref" tablehead="Preview" type="text"
          description="The frame's preview; it links to the frame's page (summary and plots)">
        <formatter>
          obsId = data.split("/")[-2]
          return T.a(href=base.makeSitePath("/\rdId/web/static/image.html?obs_id=" + urllib.parse.quote(obsId)))[
            T.img(src=base.makeSitePath("/getproduct/" + urllib.parse.quote(data) + "?preview=True"),
              alt="preview of " + obsId, width="96", height="96", loading="lazy", class_="rapas-thumb")]
        </formatter>
      </outputField>
      <outputField name="files" select="array[obs_id, accref, publisher_did]" tablehead="Files" type="text[]"
          description="The frame's page, its calibrated FITS and its DataLink document (all its products)">
        <formatter>
          obsId, accref, pubDID = data
          return T.span(class_="rapas-links")[
            T.a(href=base.makeSitePath("/\rdId/web/static/image.html?obs_id=" + urllib.parse.quote(obsId)))[obsId],
            " ", T.a(href=base.makeSitePath("/getproduct/" + urllib.parse.quote(accref)))["FITS"],
            " ", T.a(href=base.makeSitePath("/\rdId/dl/dlmeta?ID=" + urllib.parse.quote(pubDID)))["DataLink"]]
        </formatter>
      </outputField>
      <outputField original="centerAlpha" displayHint="type=hms"/>
      <outputField original="centerDelta" displayHint="type=dms"/>
      <outputField original="exptime"/>
      <outputField original="telescope"/>
      <outputField original="calib_level"/>
    </outputTable>
  </service>

  <!-- the observers' pages (res/web): a frame's summary and plots
    (image.html), a target's light curve (target.html), the site's
    stylesheet; plain HTML reading the archive's own services.  A member's
    reduction jobs (job.html, jobs.html) are served by the reduction
    service, behind its login. -->
  <service id="web" allowed="static">
    <meta name="title">RAPAS Archive pages</meta>
    <meta name="description">Pages for observers and scientists: each
      frame's calibration summary and plots, each alert target's light
      curve.</meta>
    <property name="staticData">res/web</property>
    <nullCore/>
  </service>

  <service id="cone" allowed="scs.xml,form">
    <meta name="shortName">RAPAS sources</meta>
    <meta name="title">RAPAS photometric sources (cone search)</meta>
    <meta name="description">Calibrated sources of all RAPAS images around a position.</meta>
    <meta name="testQuery.ra">150.0</meta>
    <meta name="testQuery.dec">20.0</meta>
    <meta name="testQuery.sr">0.01</meta>
    <publish render="scs.xml" sets="ivo_managed"/>
    <scsCore queriedTable="sources">
      <FEED source="//scs#coreDescs"/>
    </scsCore>
  </service>

  <service id="files" allowed="static">
    <meta name="title">RAPAS product files</meta>
    <meta name="description">Plots, logs, catalogues and summaries of the reductions.</meta>
    <property name="staticData">data</property>
    <nullCore/>
  </service>

  <service id="dl" allowed="dlget,dlmeta">
    <meta name="title">RAPAS DataLink</meta>
    <meta name="description">Links from a RAPAS image to its products: the
      calibrated FITS, a preview, the source catalogue, plots, log and summary.</meta>
    <datalinkCore>
      <descriptorGenerator procDef="//soda#fits_genDesc"/>
      <!-- #this and #preview (the pipeline's preview.png) are DaCHS's own
        links; the others come from the product list in summary.json -->
      <metaMaker semantics="#derivation">
        <setup>
          <code>
            contract, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/contract")
          </code>
        </setup>
        <code>
          import json
          obsId = descriptor.accref.split("/")[-2]
          staticURL = "\rdId/files/static/%s/" % obsId
          productDir = os.path.dirname(os.path.join(base.getConfig("inputsDir"), descriptor.accessPath))
          with open(os.path.join(productDir, contract.SUMMARY_NAME)) as f:
            summary = contract.Summary.from_dict(json.load(f))
          for product in summary.products:
            if product["semantics"] not in ("#this", "#preview"):
              yield descriptor.makeLink(makeAbsoluteURL(staticURL + product["name"]),
                contentType=product["media_type"], semantics=product["semantics"],
                description=product["description"])
          yield descriptor.makeLink(
            makeAbsoluteURL("\rdId/web/static/image.html?obs_id=" + urllib.parse.quote(obsId)),
            contentType="text/html", semantics="#documentation",
            description="The frame's page: calibration summary, preview and plots")
          yield descriptor.makeLink(
            makeAbsoluteURL("/tap/sync?LANG=ADQL&amp;REQUEST=doQuery&amp;QUERY="
              + urllib.parse.quote("SELECT * FROM rapas.sources WHERE obs_id='%s'" % obsId)),
            contentType="application/x-votable+xml", semantics="#derivation",
            description="Source catalogue of this image from the archive (TAP)")
          yield descriptor.makeLink(
            makeAbsoluteURL("/tap/sync?LANG=ADQL&amp;REQUEST=doQuery&amp;QUERY="
              + urllib.parse.quote("SELECT * FROM rapas.notable WHERE obs_id='%s'" % obsId)),
            contentType="application/x-votable+xml", semantics="#auxiliary",
            description="Notable objects in the field: variables, quasars, minor planets, alerts (TAP)")
        </code>
      </metaMaker>
    </datalinkCore>
  </service>


  <service id="reduce" allowed="async,form,static" limitTo="rapas">
    <meta name="shortName">RAPAS reduction</meta>
    <meta name="title">RAPAS frame reduction</meta>
    <meta name="description">Reduce one of your frames and add it to the
      archive: choose the FITS file and press Go.  The pipeline checks the
      header, fixes the astrometry (or solves the field), measures every star
      and calibrates the magnitudes against Gaia DR3; you watch the stages on
      the job's page, then see the zero point, depth and plots there.  Leave
      the options empty to use the defaults shown; they fit most frames.
      For network members only.</meta>
    <meta name="_bottominfo" format="rst">\RSTservicelink{rapas/q/reduce/static/jobs.html}{Your jobs}:
      each one's stages, results and plots.  Scripts submit the same job
      through IVOA UWS at this service's async endpoint (pyvo, curl; the
      frame as a DALI upload).</meta>
    <!-- the form makes a UWS job and shows its page (static/job.html, the
      members' pages of res/web: behind the service's login); no output
      format; listed on the home page -->
    <publish render="form" sets="local"/>
    <property name="fixedFormat">True</property>
    <property name="staticData">res/web</property>
    <!-- res/reducecore.py: the job's code and the service's UWS
      (DaCHS's user UWS with the UWS 1.1 fixes of res/reduceuws.py) -->
    <customCore module="res/reducecore">
      <inputTable>
        <inputKey name="image" type="file" required="True" tablehead="FITS frame"
          description="The frame to reduce: FITS, gzip or fpack, first 2-D image HDU"/>
        <inputKey name="band" type="text" tablehead="Filter band"
          description="Filter band (G, BP, RP, B, V, R, I, g', r', i', z', CLEAR and synonyms);
            default: the FILTER keyword"/>
        <inputKey name="threshold" type="real" tablehead="Detection threshold"
          description="Detection threshold: the S/N of a point source in the PSF-matched filter
            (default 5; noise gives about one detection per million pixels at 5)">
          <values min="3" max="100"/>
        </inputKey>
        <inputKey name="seeing" type="real" unit="arcsec" tablehead="Seeing guess"
          description="Seeing guess before the FWHM is measured">
          <values min="0.1" max="30"/>
        </inputKey>
        <inputKey name="border" type="integer" unit="pix" tablehead="Border mask"
          description="Pixels masked along each edge (default 10)">
          <values min="0" max="1000"/>
        </inputKey>
        <inputKey name="max_calib_mag" type="real" unit="mag" tablehead="Faintest calibrator"
          description="Faintest Gaia star used for the zero point (default 20)">
          <values min="8" max="22"/>
        </inputKey>
        <inputKey name="plate_solve" type="text" multiplicity="single" tablehead="Plate solving"
          description="auto: solve only without a usable WCS; always; never">
          <values default="auto"><option>auto</option><option>always</option><option>never</option></values>
        </inputKey>
        <inputKey name="solve_timeout" type="real" unit="s" tablehead="Solve time limit"
          description="Wall-clock limit of Astrometry.net (default 120 s)">
          <values min="1" max="3600"/>
        </inputKey>
        <inputKey name="ra" type="real" unit="deg" ucd="pos.eq.ra" tablehead="Pointing RA"
          description="Where the frame points, for plate solving when the header has no usable WCS
            (default: RA/DEC, OBJCTRA/OBJCTDEC, RA-MNT/DEC-MNT... in the header)">
          <values min="0" max="360"/>
        </inputKey>
        <inputKey name="dec" type="real" unit="deg" ucd="pos.eq.dec" tablehead="Pointing Dec"
          description="Declination of the pointing (give it with ra)">
          <values min="-90" max="90"/>
        </inputKey>
        <inputKey name="radius" type="real" unit="deg" tablehead="Pointing error"
          description="How far the field centre may be from the pointing (default 0.5 deg)">
          <values min="0.001" max="10"/>
        </inputKey>
        <inputKey name="scale" type="real" unit="arcsec/pix" tablehead="Pixel scale"
          description="Pixel scale for plate solving (default: PIXSCALE, or FOCALLEN and XPIXSZ, in the header)">
          <values min="0.01" max="200"/>
        </inputKey>
        <inputKey name="saturation" type="real" unit="adu" tablehead="Saturation"
          description="Saturation level (default: SATURATE or DATAMAX in the header, else the clip level
            found in the data)">
          <values min="1"/>
        </inputKey>
        <inputKey name="colour_plane" type="text" multiplicity="single" tablehead="Bayer colour plane"
          description="For a raw DSLR or one-shot-colour (Bayer) mosaic: the colour plane reduced,
            at half resolution (G: band TG against Gaia G; R: TR against RP; B: TB against BP)">
          <values default="G"><option>G</option><option>R</option><option>B</option></values>
        </inputKey>
        <inputKey name="psf" type="boolean" tablehead="PSF photometry"
          description="Fit the stars' measured shape (PSF) to every source, besides apertures">
          <values default="True"/>
        </inputKey>
        <inputKey name="cosmics" type="boolean" tablehead="Mask cosmic rays"
          description="Always mask cosmic rays (LA Cosmic); unticked, they are masked only when most
            detections are sharper than a star"/>
        <inputKey name="apertures" type="text" tablehead="Aperture radii"
          description="Four aperture radii in FWHM units, comma-separated (default 1,1.5,2,3)"/>
        <inputKey name="site" type="text" tablehead="Site"
          description="Observatory 'lat,lon[,height_m]' when the header has none"/>
        <inputKey name="observatory_code" type="text" tablehead="MPC code"
          description="MPC observatory code, e.g. C95: minor planets are looked up for it (topocentric)"/>
        <inputKey name="enrich" type="boolean" tablehead="Catalogue enrichment"
          description="Name the known objects among your sources: SIMBAD, variable stars (VSX), quasars
            (Milliquas), minor planets (SkyBoT), alerts (Astro-COLIBRI)">
          <values default="True"/>
        </inputKey>
      </inputTable>
    </customCore>
  </service>


  <service id="target_edit" allowed="form,api" limitTo="rapas">
    <meta name="title">RAPAS alert targets (members)</meta>
    <meta name="description">Add, edit or retire a target the network
      follows up.  A new target (or a moved one) is measured by forced
      photometry on every archived image that covers it, in the background
      (progress in rapas.targets.backfill), and on every image archived
      from then on.  Members of the RAPAS network only; scripts use the
      api renderer (HTTP basic authentication, POST or GET with the same
      parameters; the answer is a VOTable).</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="action" type="text" multiplicity="single" tablehead="Action"
          description="add a new target, edit an existing one (fields left empty are kept), or retire it
            (no longer measured on new images; its light curve stays)">
          <values default="add"><option>add</option><option>edit</option><option>retire</option></values>
        </inputKey>
        <inputKey name="name" type="text" tablehead="Name"
          description="Target name, e.g. GRB 261130A or SN 2026abc"/>
        <inputKey name="ra" type="double precision" unit="deg" ucd="pos.eq.ra" tablehead="RA"
          description="Right ascension (ICRS, degrees)"/>
        <inputKey name="dec" type="double precision" unit="deg" ucd="pos.eq.dec" tablehead="Dec"
          description="Declination (ICRS, degrees)"/>
        <inputKey name="pos_error" type="real" unit="arcsec" tablehead="Position error"
          description="Error radius of the position (arcsec)"/>
        <inputKey name="kind" type="text" multiplicity="single" tablehead="Kind" description="What it is">
          <values><option>GRB</option><option>SN</option><option>KN</option><option>nova</option>
            <option>variable</option><option>other</option></values>
        </inputKey>
        <inputKey name="alert_time" type="text" tablehead="Alert time"
          description="Time of the alert or event: ISO 8601 UTC (2026-11-30T04:12:00) or MJD"/>
        <inputKey name="origin" type="text" multiplicity="single" tablehead="Origin"
          description="Where the alert comes from">
          <values default="member"><option>member</option><option>Astro-COLIBRI</option><option>TNS</option>
            <option>GCN</option></values>
        </inputKey>
      </inputTable>
      <outputTable>
        <column original="targets.name"/>
        <column original="targets.ra"/>
        <column original="targets.dec"/>
        <column original="targets.pos_error"/>
        <column original="targets.kind"/>
        <column original="targets.alert_mjd"/>
        <column original="targets.origin"/>
        <column original="targets.added_by"/>
        <column original="targets.retired"/>
        <column original="targets.backfill"/>
        <column original="targets.target_did"/>
        <column name="message" type="text" ucd="meta.note" tablehead="Done" description="What was done"/>
      </outputTable>
      <coreProc>
        <setup>
          <code>
            lightcurve, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/lightcurve")
          </code>
        </setup>
        <code>
          return lightcurve.serve_request(self.outputTable, inputTable, queryMeta)
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <service id="withdraw" allowed="form,api" limitTo="rapas">
    <meta name="title">Withdraw a RAPAS image (members)</meta>
    <meta name="description">Withdraw an image you submitted (a mistaken
      submission, a retracted frame): its rows, sources, light-curve points
      and product files leave the archive, and an audit row records who,
      when and why.  Members of the RAPAS network only, for their own
      images; an administrator withdraws any with res/ingest.py --remove.
      Scripts use the api renderer (the answer is a VOTable, a refusal one
      line in its QUERY_STATUS).</meta>
    <pythonCore>
      <inputTable>
        <inputKey name="obs_id" type="text" required="True" tablehead="Obs. id"
          description="The image to withdraw (rapas.images.obs_id)"/>
        <inputKey name="reason" type="text" required="True" tablehead="Reason"
          description="Why it is withdrawn (kept in the audit trail)"/>
      </inputTable>
      <outputTable>
        <column original="withdrawals.obs_id"/>
        <column original="withdrawals.withdrawn_by"/>
      </outputTable>
      <coreProc>
        <setup>
          <code>
            ingest, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/ingest")
          </code>
        </setup>
        <code>
          try:
            done = ingest.remove(inputTable.getParam("obs_id").strip(), member=queryMeta["user"],
              reason=inputTable.getParam("reason"))
          except ingest.IngestError as exc:
            raise base.ValidationError(str(exc), "obs_id")
          return rsc.TableForDef(self.outputTable, rows=[
            {"obs_id": done["obs_id"], "withdrawn_by": done["withdrawn_by"]}])
        </code>
      </coreProc>
    </pythonCore>
  </service>

  <table id="lc_instance" onDisk="False">
    <meta name="description">RAPAS light curve of one target: forced
      photometry on every archived image covering it, from every observer;
      phot is the calibrated magnitude (NULL where the target was not
      detected at S/N 3: mag_limit is the 5-sigma upper limit there).</meta>
    <param name="target_name" type="text" ucd="meta.id;src" description="The target"/>
    <param name="ra" type="double precision" unit="deg" ucd="pos.eq.ra" description="Target right ascension (ICRS)"/>
    <param name="dec" type="double precision" unit="deg" ucd="pos.eq.dec" description="Target declination (ICRS)"/>
    <param name="filter_id" type="text" ucd="meta.id;instr.filter" description="The band(s) of the points"/>
    <param name="effective_wavelength" type="double precision" unit="m" ucd="em.wl.effective"
      description="Mean effective wavelength of the points' bands"/>
    <mixin effectiveWavelength="@effective_wavelength" filterIdentifier="@filter_id" magnitudeSystem="Vega"
      phot_description="Calibrated magnitude (Gaia DR3 system of the band); NULL for a non-detection"
      phot_ucd="phot.mag;em.opt" phot_unit="mag" refposition="TOPOCENTER" refframe="ICRS" longitude="@ra"
      latitude="@dec" time0="2400000.5" timescale="UTC"
      time_description="Mid-exposure time, MJD (UTC)">//timeseries#phot-0</mixin>
    <column original="lightcurves.mag_err"/>
    <column original="lightcurves.mag_limit"/>
    <column original="lightcurves.flux"/>
    <column original="lightcurves.flux_err"/>
    <column original="lightcurves.snr"/>
    <column original="lightcurves.filter"/>
    <column original="lightcurves.observer"/>
    <column original="lightcurves.telescope"/>
    <column original="lightcurves.t_alert"/>
    <column original="lightcurves.mag_calib_err"/>
    <column original="lightcurves.method"/>
    <column original="lightcurves.obs_id"/>
  </table>

  <STREAM id="target_descriptor">
    <descriptorGenerator>
      <setup>
        <code>
          lightcurve, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/lightcurve")
        </code>
      </setup>
      <code>
        return lightcurve.descriptor_for(pubDID, ProductDescriptor, DatalinkFault)
      </code>
    </descriptorGenerator>
  </STREAM>

  <service id="lcdl" allowed="dlget,dlmeta">
    <meta name="title">RAPAS light curves (DataLink)</meta>
    <meta name="description">The light curve of a RAPAS alert target
      (rapas.targets.target_did) as a VOTable time series, its plot, its
      rows with their calibration provenance (TAP) and the images that
      cover it (SIAP2).</meta>
    <datalinkCore>
      <FEED source="target_descriptor"/>
      <metaMaker>
        <setup>
          <code>
            lightcurve, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/lightcurve")
          </code>
        </setup>
        <code>
          yield from lightcurve.links_for(descriptor, makeAbsoluteURL)
        </code>
      </metaMaker>
      <dataFunction>
        <setup>
          <code>
            lightcurve, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/lightcurve")
          </code>
        </setup>
        <code>
          descriptor.data = lightcurve.time_series(descriptor, rd.getById("lc_instance"))
        </code>
      </dataFunction>
      <dataFormatter>
        <setup imports="gavo.formats.votablewrite"/>
        <code>
          return ("application/x-votable+xml", votablewrite.getAsVOTable(descriptor.data))
        </code>
      </dataFormatter>
    </datalinkCore>
  </service>

  <service id="lcplot" allowed="dlget">
    <meta name="title">RAPAS light-curve plots</meta>
    <meta name="description">PNG of a RAPAS target's light curve: magnitude
      against time by band and observer, 5-sigma upper limits as arrows.</meta>
    <datalinkCore>
      <FEED source="target_descriptor"/>
      <dataFunction>
        <setup>
          <code>
            lightcurve, _ = utils.loadPythonModule(base.getConfig("inputsDir") + "/rapas/res/lightcurve")
          </code>
        </setup>
        <code>
          descriptor.data = lightcurve.plot_png(descriptor.target)
        </code>
      </dataFunction>
      <dataFormatter>
        <code>
          return ("image/png", descriptor.data)
        </code>
      </dataFormatter>
    </datalinkCore>
  </service>

  <regSuite title="RAPAS regression">
    <regTest title="RAPAS SIAP2 answers with the ObsCore fields">
      <url MAXREC="1">siap2/siap2.xml</url>
      <code>
        self.assertHasStrings("obs_publisher_did", "access_url", "s_region")
      </code>
    </regTest>
    <regTest title="RAPAS tables are in the TAP schema">
      <url LANG="ADQL" REQUEST="doQuery" RESPONSEFORMAT="text/csv"
        QUERY="SELECT table_name FROM tap_schema.tables WHERE table_name LIKE 'rapas.%'"
        >/tap/sync</url>
      <code>
        self.assertHasStrings("rapas.images", "rapas.sources", "rapas.notable")
      </code>
    </regTest>
    <regTest title="RAPAS cone search serves the catalogue columns with their UCDs">
      <url RA="0" DEC="0" SR="0.001">cone/scs.xml</url>
      <code>
        self.assertXpath("//v:FIELD[@name='mag_cal']", {"ucd": "phot.mag;em.opt", "unit": "mag"})
        self.assertXpath("//v:FIELD[@name='flags']", {"ucd": "meta.code.qual"})
        self.assertXpath("//v:FIELD[@name='gaia_source_id']/v:VALUES", {"null": "0"})
      </code>
    </regTest>
    <regTest title="RAPAS reduction form and job list are for members only">
      <url>reduce/form</url>
      <code>
        self.assertHTTPStatus(401)
        headers = dict((key.lower(), value) for key, value in self.headers)
        self.assertTrue(headers["www-authenticate"].startswith("Basic"))
      </code>
    </regTest>
  </regSuite>

  <regSuite title="RAPAS DataLink of an archived image" sequential="True">
    <regTest title="RAPAS has an image to link from">
      <url LANG="ADQL" REQUEST="doQuery" RESPONSEFORMAT="votable"
        QUERY="SELECT TOP 1 obs_publisher_did FROM ivoa.obscore WHERE obs_collection='RAPAS'"
        >/tap/sync</url>
      <code>
        rows = self.getVOTableRows()
        self.assertEqual(len(rows), 1)
        self.followUp.url.content_ = "/\rdId/dl/dlmeta?ID=" + urllib.parse.quote(
          rows[0]["obs_publisher_did"])
      </code>
    </regTest>
    <regTest title="RAPAS DataLink links the image's products, one preview">
      <url>dl/dlmeta</url>
      <code>
        rows = self.getVOTableRows()
        semantics = [row["semantics"] for row in rows]
        self.assertEqual(semantics.count("#this"), 1)
        self.assertEqual(semantics.count("#preview"), 1)
        urls = " ".join(row["access_url"] or "" for row in rows)
        for name in ["sources.vot", "sources.fits", "summary.json", "zeropoint.png", "rapas.log"]:
          self.assertTrue("/" + name in urls, name)
      </code>
    </regTest>
  </regSuite>
</resource>
