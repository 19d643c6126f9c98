<resource schema="i355" resdir="rapas">
  <meta name="creationDate">2026-11-25T00:00:00Z</meta>
  <meta name="title">Test stand-in for VizieR's I/355/gaiadr3</meta>
  <meta name="description">Only in the tests' throwaway DaCHS: a simulated
    Gaia DR3 extract with the column names VizieR gives I/355/gaiadr3, so the
    pipeline's VizieR column mapping runs against a real TAP service.</meta>
  <meta name="subject">photometry</meta>
  <meta name="creator">RAPAS tests</meta>

  <table id="gaiadr3" onDisk="True" adql="True" mixin="//scs#pgs-pos-index">
    <column name="source" type="bigint" required="True" ucd="meta.id;meta.main" description="Gaia DR3 source_id"/>
    <column name="ra_icrs" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" required="True"
      description="RA at epoch 2016.0"/>
    <column name="de_icrs" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" required="True"
      description="Dec at epoch 2016.0"/>
    <column name="pmra" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.ra" description="pmRA cos Dec"/>
    <column name="pmde" type="real" unit="mas/yr" ucd="pos.pm;pos.eq.dec" description="pmDec"/>
    <column name="gmag" type="real" unit="mag" ucd="phot.mag;em.opt" description="G"/>
    <column name="bpmag" type="real" unit="mag" ucd="phot.mag;em.opt.B" description="BP"/>
    <column name="rpmag" type="real" unit="mag" ucd="phot.mag;em.opt.R" description="RP"/>
  </table>

  <data id="import">
    <sources pattern="refcat/vizier_gaiadr3*.fits"/>
    <fitsTableGrammar lowerKeys="True"/>
    <make table="gaiadr3">
      <rowmaker idmaps="*"/>
    </make>
  </data>
</resource>
