<resource schema="__system">
  <!-- The RAPAS Archive's site records and TAP examples for DaCHS
    ("make install" installs this as /var/gavo/etc/userconfig.rd).  Names
    and addresses come from the site file (inputs/rapas/etc/archive.toml),
    rendered into defaultmeta.txt: \metaString{...} below reads them. -->

  <STREAM id="registry-interfacerecords">
    <!-- the authority, the organisation that runs the archive, and the
      publishing registry ("make publish": dachs pub //services) -->
    <resRec id="authority">
      <meta>
        resType: authority
        creationDate: \metaString{authority.creationDate}
        title: \metaString{authority.title}
        shortName: \metaString{authority.shortName}
        subject: virtual-observatories
        managingOrg: \metaString{publisher}
        managingOrg.ivo-id: ivo://\getConfig{ivoa}{authority}/org
        referenceURL: \metaString{authority.referenceURL}
        identifier: ivo://\getConfig{ivoa}{authority}
        sets: ivo_managed
      </meta>
      <meta name="description">\metaString{authority.description}</meta>
    </resRec>

    <resRec id="org">
      <meta>
        resType: organization
        creationDate: \metaString{authority.creationDate}
        title: \metaString{publisher}
        shortName: \metaString{authority.shortName}
        subject: virtual-observatories
        referenceURL: \metaString{organisation.referenceURL}
        identifier: ivo://\getConfig{ivoa}{authority}/org
        sets: ivo_managed
      </meta>
      <meta name="description">\metaString{organisation.description}</meta>
    </resRec>

    <service id="registry" allowed="pubreg.xml">
      <registryCore/>
      <publish render="pubreg.xml" sets="ivo_managed">
        <meta name="accessURL">\getConfig{web}{serverURL}\getConfig{web}{nevowRoot}oai.xml</meta>
      </publish>
      <meta name="resType">registry</meta>
      <meta name="title">\getConfig{web}{sitename} Registry</meta>
      <meta name="creationDate">\metaString{authority.creationDate}</meta>
      <meta name="description">The publishing registry of the \getConfig{web}{sitename}:
        the records of its services, tables and organisation.</meta>
      <meta name="subject">virtual-observatories</meta>
      <meta name="shortName">\metaString{authority.shortName} RG</meta>
      <meta name="content.type">Archive</meta>
      <meta name="rights">public</meta>
      <meta name="harvest.description">The harvesting interface of the publishing registry of the
        \getConfig{web}{sitename}</meta>
      <meta name="maxRecords">10000</meta>
      <meta name="managedAuthority">\getConfig{ivoa}{authority}</meta>
      <meta name="publisher">\metaString{publisher}</meta>
    </service>
  </STREAM>

  <STREAM id="tapexamples">
    <!-- served at /tap/examples (DALI examples); TOPCAT lists them in its
      TAP window.  The positions and names are the demo frame's. -->
    <meta name="_example" title="Sources around a position">
      Calibrated sources of every RAPAS image within 3 arcmin of a position,
      with the time and band of their image (join rapas.sources to
      rapas.images on obs_id).  mag_cal_err is the measurement error,
      mag_calib_err the calibration's: add them in quadrature to compare
      with another catalogue.

      .. tapquery::

        SELECT s.source_id, s.ra, s.dec, s.mag_cal, s.mag_cal_err, s.mag_calib_err,
          i.filter, i.t_min
        FROM rapas.sources AS s JOIN rapas.images AS i ON s.obs_id = i.obs_id
        WHERE 1 = CONTAINS(POINT('ICRS', s.ra, s.dec), CIRCLE('ICRS', 150.1, 2.2, 0.05))
    </meta>

    <meta name="_example" title="Light curve of one star">
      Every measurement of the star at a position (within 1.5 arcsec), from
      every observer, in time order: the star's light curve from the source
      catalogues (unflagged measurements only).

      .. tapquery::

        SELECT i.t_min, i.filter, i.observer, s.mag_cal, s.mag_cal_err, s.mag_calib_err,
          s.mag_psf, s.mag_psf_err, s.flags
        FROM rapas.sources AS s JOIN rapas.images AS i ON s.obs_id = i.obs_id
        WHERE 1 = CONTAINS(POINT('ICRS', s.ra, s.dec), CIRCLE('ICRS', 150.0943, 2.1635, 0.0004))
          AND s.flags = 0
        ORDER BY t_min
    </meta>

    <meta name="_example" title="Images of a field by time and band">
      RAPAS images covering a position, taken in a band between two dates
      (MJD), deepest first, with their calibration: the image's footprint
      (s_region) must contain the position.

      .. tapquery::

        SELECT obs_id, filter, t_min, exptime, fwhm, zero_point, limiting_mag, accref
        FROM rapas.images
        WHERE 1 = CONTAINS(POINT('ICRS', 150.1, 2.2), coverage)
          AND filter = 'G' AND t_min BETWEEN 60000 AND 70000
        ORDER BY limiting_mag DESC
    </meta>

    <meta name="_example" title="ObsCore with the archive's calibration">
      The ObsCore view of the RAPAS images (as ObsTAP portals see them)
      joined with the archive's own image table on obs_id: the access URL
      and the data link next to the zero point, depth and seeing.

      .. tapquery::

        SELECT o.obs_id, o.obs_publisher_did, o.access_url, i.t_min, o.em_min, o.em_max,
          i.filter, i.zero_point, i.limiting_mag, i.fwhm, i.observer
        FROM ivoa.obscore AS o JOIN rapas.images AS i ON o.obs_id = i.obs_id
        WHERE o.obs_collection = 'RAPAS' AND i.limiting_mag > 18
        ORDER BY limiting_mag DESC
    </meta>

    <meta name="_example" title="Light curve of an alert target">
      Forced photometry of an alert target on every image covering it:
      magnitudes where it was detected (S/N of 3 or more), 5-sigma upper
      limits everywhere, fluxes on a zero point of 25 for stacking.
      rapas.targets lists the targets.

      .. tapquery::

        SELECT mjd, t_alert, filter, observer, mag, mag_err, mag_calib_err, mag_limit,
          flux, flux_err, method, obs_id
        FROM rapas.lightcurves
        WHERE target = 'DEMO 2026a'
        ORDER BY mjd
    </meta>

    <meta name="_example" title="Catalogued variables and what else was in the fields">
      Measurements of known variable stars (VSX) matched to RAPAS sources,
      and the notable objects (variables, quasars, minor planets, alerts)
      in each image's field.

      .. tapquery::

        SELECT n.obs_id, n.catalogue, n.kind, n.name, n.ra, n.dec, s.mag_cal, s.mag_cal_err
        FROM rapas.notable AS n LEFT OUTER JOIN rapas.sources AS s ON n.source_id = s.source_id
        ORDER BY catalogue, name
    </meta>
  </STREAM>
</resource>
