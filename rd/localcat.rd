<resource schema="localcat" resdir="rapas">
  <meta name="creationDate">2026-11-25T00:00:00Z</meta>
  <meta name="title">Local cross-identification catalogues for RAPAS</meta>
  <meta name="description">
    Local extracts of SIMBAD (basic), the AAVSO VSX variable-star index
    (VizieR B/vsx/vsx) and the Milliquas quasar catalogue (VizieR VII/294),
    with the column names of the services they come from, so that the RAPAS
    pipeline runs the same ADQL upload joins against this archive's TAP
    service as against SIMBAD and VizieR (ADQL names are case-insensitive;
    they are declared in lower case here, as DaCHS returns them).  Loaded with "make refcat" from
    FITS tables in the resource directory's refcat/ folder: a site without
    internet enriches its sources from them.
  </meta>
  <meta name="subject">cross-identification</meta>
  <meta name="subject">variable-stars</meta>
  <meta name="subject">quasars</meta>
  <meta name="creator">CDS; AAVSO; Flesch, E.</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Catalog</meta>
  <meta name="coverage.waveband">Optical</meta>

  <table id="basic" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <meta name="description">SIMBAD-like basic data: main identifier, position, object type.</meta>
    <column name="main_id" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Main id" verbLevel="1" description="SIMBAD main identifier"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" required="True"
      tablehead="RA" verbLevel="1" description="Right ascension (ICRS, J2000)"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" required="True"
      tablehead="Dec" verbLevel="1" description="Declination (ICRS, J2000)"/>
    <column name="otype" type="text" ucd="src.class" tablehead="Type" verbLevel="1"
      description="SIMBAD object type (short name)"/>
    <column name="pmra" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.ra" tablehead="pmRA"
      verbLevel="5" description="Proper motion in RA (times cos Dec)"/>
    <column name="pmdec" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.dec" tablehead="pmDec"
      verbLevel="5" description="Proper motion in Dec"/>
  </table>

  <table id="vsx" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <meta name="description">VSX variable stars with VizieR B/vsx/vsx column names.</meta>
    <column name="name" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Name" verbLevel="1" description="VSX star name"/>
    <column name="raj2000" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" required="True"
      tablehead="RA" verbLevel="1" description="Right ascension (J2000)"/>
    <column name="dej2000" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" required="True"
      tablehead="Dec" verbLevel="1" description="Declination (J2000)"/>
    <column name="type" type="text" ucd="src.class;src.var" tablehead="Type" verbLevel="1"
      description="Variability type (GCVS convention)"/>
    <column name="period" type="double precision" unit="d" ucd="time.period;src.var"
      tablehead="Period" verbLevel="5" description="Period"/>
  </table>

  <table id="milliquas" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <meta name="description">Milliquas quasars and AGN with VizieR VII/294 column names.</meta>
    <column name="name" type="text" required="True" ucd="meta.id;meta.main"
      tablehead="Name" verbLevel="1" description="Object name"/>
    <column name="raj2000" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" required="True"
      tablehead="RA" verbLevel="1" description="Right ascension (J2000)"/>
    <column name="dej2000" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" required="True"
      tablehead="Dec" verbLevel="1" description="Declination (J2000)"/>
    <column name="type" type="text" ucd="src.class" tablehead="Type" verbLevel="1"
      description="Classification (Q quasar, A AGN, B BL Lac, K narrow-line, N Seyfert 2, ...)"/>
    <column name="rmag" type="real" unit="mag" ucd="phot.mag;em.opt.R" tablehead="R" verbLevel="5"
      description="Red magnitude"/>
    <column name="z" type="real" ucd="src.redshift" tablehead="z" verbLevel="1" description="Redshift"/>
  </table>

  <LOOP>
    <csvItems>
      table, pattern
      basic, refcat/simbad_basic*.fits
      vsx, refcat/vsx*.fits
      milliquas, refcat/milliquas*.fits
    </csvItems>
    <events>
      <data id="import_\table">
        <sources pattern="\pattern"/>
        <!-- the services' own spelling (Name, RAJ2000) in any case; NaN is NULL -->
        <fitsTableGrammar lowerKeys="True" nanIsNULL="True"/>
        <make table="\table">
          <rowmaker idmaps="*"/>
        </make>
      </data>
    </events>
  </LOOP>
</resource>
