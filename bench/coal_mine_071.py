"""Coal Mine 0.7.1, as installed from PyPI, on its in-memory store: the reference server of
bench/run's side-by-side table. Run by the Python of the virtual environment that holds
`coal-mine==0.7.1` (never this checkout's code):

    VENV/bin/python bench/coal_mine_071.py PORT CANARIES IDS_FILE LOG_FILE

It creates CANARIES canaries (periodicity one day) through 0.7.1's own business logic,
writes their ids to IDS_FILE, then serves exactly as 0.7.1's `serve()` does (wsgiref's
make_server with its LogbookWSGIRequestHandler, logging to LOG_FILE) until SIGTERM.
0.7.1's server always opens MongoDB; only the store differs here.
"""

import signal
import sys
from functools import partial
from wsgiref.simple_server import make_server

import logbook
from coal_mine.business_logic import BusinessLogic
from coal_mine.memory_store import MemoryStore
from coal_mine.server import LogbookWSGIRequestHandler, application


def main(argv):
    port, count, ids_file, log_file = int(argv[1]), int(argv[2]), argv[3], argv[4]
    with logbook.FileHandler(log_file).applicationbound():
        logic = BusinessLogic(MemoryStore(), "bench@example.com", smtp_host="127.0.0.1", smtp_port=9)
        ids = [logic.create(f"bench {n}", 86400)["id"] for n in range(count)]
        logic.schedule_next_deadline()
        with open(ids_file, "w") as out:
            out.write("".join(f"{cid}\n" for cid in ids))
        httpd = make_server(
            "127.0.0.1", port, partial(application, logic, None), handler_class=LogbookWSGIRequestHandler
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        httpd.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
