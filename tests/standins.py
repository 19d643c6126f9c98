"""Local stand-ins for SkyBoT and Astro-COLIBRI, answering in their documented
formats (SkyBoT's text cone search, COLIBRI's JSON cone search), plus a
'silent' service that accepts connections and never answers.  Every request
is counted per service; the last parameters are kept for assertions."""
import json
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.time import Time

SKYBOT_HEADER = ("# Num | Name | RA(h) | DE(deg) | Class | Mv | Err(arcsec) | d(arcsec) | dRA(arcsec/h)"
                 " | dDEC(arcsec/h) | Dg(ua) | Dh(ua)")


class StandIns:
    def __init__(self):
        self.bodies = []       # dicts: num, name, ra, dec, cls, vmag, err, dg
        self.events = []       # dicts as COLIBRI sends them (source_name, type, ra, dec, err, time, ...)
        self.requests = Counter()
        self.last = {}
        self._stop = threading.Event()
        self._server = None

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                service = url.path.split("/")[1]
                owner.requests[service] += 1
                if service == "silent":
                    owner._stop.wait(120)
                    return
                params = dict(urllib.parse.parse_qsl(url.query))
                owner.last[service] = params
                self._send(owner.skybot_answer(params).encode(), "text/plain")

            def do_POST(self):
                service = urllib.parse.urlsplit(self.path).path.split("/")[1]
                owner.requests[service] += 1
                if service == "silent":
                    owner._stop.wait(120)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.last[service] = body
                self._send(json.dumps(owner.colibri_answer(body)).encode(), "application/json")

            def _send(self, payload, mime):
                self.send_response(200)
                self.send_header("Content-Type", mime)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self):
        self._stop.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def url(self, service):
        return {"skybot": f"{self.base}/skybot/api/conesearch.php",
                "colibri": f"{self.base}/colibri/cone_search",
                "silent": f"{self.base}/silent/service"}[service]

    # ---- answers --------------------------------------------------------
    def skybot_answer(self, params):
        for key in ("-ep", "-ra", "-dec", "-rd", "-mime", "-loc"):
            if key not in params:
                return f"# Flag: -1\n# Ticket: 0\nmissing parameter {key}\n"
        centre = SkyCoord(float(params["-ra"]) * u.deg, float(params["-dec"]) * u.deg)
        rows = []
        for b in self.bodies:
            d = centre.separation(SkyCoord(b["ra"] * u.deg, b["dec"] * u.deg)).deg
            if d <= float(params["-rd"]):
                ra = Angle(b["ra"] * u.deg).to_string(unit=u.hour, sep=" ", precision=4, pad=True)
                dec = Angle(b["dec"] * u.deg).to_string(unit=u.deg, sep=" ", precision=3, pad=True,
                                                         alwayssign=True)
                rows.append(f"{b['num']} | {b['name']} | {ra} | {dec} | {b['cls']} | {b['vmag']:.1f} |"
                            f" {b['err']:.3f} | {d * 3600:.2f} | 12.3 | -4.5 | {b['dg']:.6f} | 2.4")
        if not rows:
            return "# Flag: 0\n# Ticket: 1732500000000\nNo solar system object was found in the requested FOV\n"
        return "\n".join(["# Flag: 1", "# Ticket: 1732500000000", SKYBOT_HEADER, *rows]) + "\n"

    def colibri_answer(self, body):
        props, window = body["properties"], body["time_range"]
        centre = SkyCoord(props["position"]["ra"] * u.deg, props["position"]["dec"] * u.deg)
        t_min, t_max = Time(window["min"]), Time(window["max"])
        found = [e for e in self.events
                 if centre.separation(SkyCoord(e["ra"] * u.deg, e["dec"] * u.deg)).deg <= props["radius"]
                 and t_min <= Time(e["time"]) <= t_max]
        return {"voevents": found, "sources": []}


def random_far_positions(rng, ra, dec, radius_deg, avoid_ra, avoid_dec, n, min_sep_arcsec):
    """``n`` positions in the box of half-size ``radius_deg`` at least ``min_sep_arcsec`` from every avoided one."""
    avoid = SkyCoord(np.asarray(avoid_ra) * u.deg, np.asarray(avoid_dec) * u.deg)
    out_ra, out_dec = [], []
    while len(out_ra) < n:
        dx, dy = rng.uniform(-radius_deg, radius_deg, 2)
        c = SkyCoord((ra + dx / np.cos(np.radians(dec))) * u.deg, (dec + dy) * u.deg)
        if c.separation(avoid).arcsec.min() >= min_sep_arcsec:
            out_ra.append(c.ra.deg)
            out_dec.append(c.dec.deg)
    return np.array(out_ra), np.array(out_dec)
