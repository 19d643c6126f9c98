<resource schema="gaiadr3" resdir="rapas">
  <meta name="creationDate">2026-11-25T00:00:00Z</meta>
  <meta name="title">Local Gaia DR3 extract for RAPAS calibration</meta>
  <meta name="description">
    A local extract of Gaia DR3 with the column names of the ESA Gaia
    archive's gaiadr3.gaia_source, so that the RAPAS pipeline runs the same
    ADQL against this archive's TAP service as against ESA's.  Loaded with
    "make refcat" from FITS tables in the resource directory's refcat/
    folder; a site without internet calibrates against it.
  </meta>
  <meta name="subject">photometry</meta>
  <meta name="creator">Gaia Collaboration</meta>
  <meta name="source">2023A&amp;A...674A...1G</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Catalog</meta>
  <meta name="coverage.waveband">Optical</meta>

  <table id="gaia_source" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <meta name="description">Gaia DR3 sources of the fields RAPAS calibrates,
      with the ESA archive's column names.</meta>
    <column name="source_id" type="bigint" required="True" ucd="meta.id;meta.main"
      tablehead="Gaia DR3" verbLevel="1" description="Gaia DR3 source identifier"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main"
      tablehead="RA" verbLevel="1" required="True" description="Right ascension (ICRS) at ref_epoch"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main"
      tablehead="Dec" verbLevel="1" required="True" description="Declination (ICRS) at ref_epoch"/>
    <column name="pmra" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.ra"
      tablehead="pmRA" verbLevel="5" description="Proper motion in RA (times cos Dec)"/>
    <column name="pmdec" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.dec"
      tablehead="pmDec" verbLevel="5" description="Proper motion in Dec"/>
    <column name="ref_epoch" type="double precision" unit="yr" ucd="meta.ref;time.epoch"
      tablehead="Epoch" verbLevel="15" description="Epoch of the positions (Julian year)"/>
    <column name="phot_g_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt"
      tablehead="G" verbLevel="1" description="Gaia G mean magnitude"/>
    <column name="phot_bp_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt.B"
      tablehead="BP" verbLevel="5" description="Gaia BP mean magnitude"/>
    <column name="phot_rp_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt.R"
      tablehead="RP" verbLevel="5" description="Gaia RP mean magnitude"/>
  </table>

  <data id="import">
    <sources pattern="refcat/gaia_source*.fits"/>
    <fitsTableGrammar/>
    <make table="gaia_source">
      <rowmaker idmaps="*">
        <LOOP listItems="pmra pmdec phot_g_mean_mag phot_bp_mean_mag phot_rp_mean_mag">
          <events>
            <map key="\item">None if @\item != @\item else float(@\item)</map>
          </events>
        </LOOP>
      </rowmaker>
    </make>
  </data>
</resource>
