"""A Hydra-compatible server for hail's NixOS test: just the routes hail reads.

GET /job/<project>/<jobset>/<job>/latest -> 302 to /build/<current id>
GET /build/<id>                          -> the build, as Hydra's JSON
Every request needs HTTP Basic auth (as a private Hydra behind a proxy): 403 otherwise.

usage: fake-hydra.py PORT BUILDS_JSON CURRENT_FILE USER:PASSWORD
  BUILDS_JSON: {"<id>": "<out path>", ...}; CURRENT_FILE holds the id /latest points at
  (rewritten by the test to publish a new build).
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
with open(sys.argv[2]) as f:
    BUILDS = json.load(f)
CURRENT_FILE = sys.argv[3]
AUTH = "Basic " + base64.b64encode(sys.argv[4].encode()).decode()


class Hydra(BaseHTTPRequestHandler):
    def send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Authorization") != AUTH:
            return self.send(403, {"error": "This page requires you to sign in."})
        parts = self.path.strip("/").split("/")
        if len(parts) == 5 and parts[0] == "job" and parts[4] == "latest":
            with open(CURRENT_FILE) as f:
                current = f.read().strip()
            location = f"http://{self.headers['Host']}/build/{current}"
            return self.send(302, {}, [("Location", location)])
        if len(parts) == 2 and parts[0] == "build" and parts[1] in BUILDS:
            build_id = int(parts[1])
            out = BUILDS[parts[1]]
            name = out.split("-", 1)[1]
            return self.send(200, {
                "id": build_id,
                "finished": 1,
                "buildstatus": 0,
                "project": "demo",
                "jobset": "main",
                "job": "svc",
                "nixname": name,
                "system": "x86_64-linux",
                "timestamp": 1717430410,
                "starttime": 1717430522,
                "stoptime": 1717430587,
                "priority": 100,
                "releasename": None,
                "drvpath": None,
                "jobsetevals": [build_id],
                "buildoutputs": {"out": {"path": out}},
                "buildproducts": {},
                "buildmetrics": {},
            })
        return self.send(404, {"error": "Page not found."})


ThreadingHTTPServer(("0.0.0.0", PORT), Hydra).serve_forever()
