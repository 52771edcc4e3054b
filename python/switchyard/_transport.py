"""One keep-alive HTTP connection to the forwarder, per thread.

http.client costs a fifth of requests' CPU per call, and the poller makes
many calls; requests is used when the environment names a proxy for the URL,
since it knows how to go through one.
"""
import http.client
import urllib.parse

import requests

from .errors import SwitchyardError

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120


class Connection:
    def __init__(self, url, headers):
        self.url = url
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"forwarder URL {url!r} must look like http://HOST:PORT or https://HOST:PORT")
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port
        self._prefix = u.path.rstrip("/")
        self._headers = headers
        self._conn = None
        self._session = None
        if requests.utils.get_environ_proxies(url):
            self._session = requests.Session()

    def request(self, method, path, body=None, headers=None):
        """Returns (status, body bytes); raises SwitchyardError when the
        forwarder cannot be reached. headers are sent besides the usual ones."""
        hdrs = self._headers if not headers else {**self._headers, **headers}
        try:
            if self._session is not None:
                r = self._session.request(method, self.url + path, data=body, headers=hdrs,
                                          timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
                return r.status_code, r.content
            # A kept-alive connection the server has closed fails at once:
            # one fresh try.
            for attempt in (0, 1):
                fresh = self._conn is None
                if fresh:
                    cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                    self._conn = cls(self._host, self._port, timeout=READ_TIMEOUT)
                try:
                    self._conn.request(method, self._prefix + path, body, hdrs)
                    r = self._conn.getresponse()
                    return r.status, r.read()
                except (http.client.HTTPException, OSError):
                    self.close()
                    if fresh or attempt == 1:
                        raise
        except (requests.RequestException, http.client.HTTPException, OSError) as e:
            raise SwitchyardError(f"cannot reach the forwarder at {self.url}: {e} "
                                  "(set SWITCHYARD_API or url= to its HTTP API)") from None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._session is not None:
            self._session.close()
