"""Profile one scenario in-process with pyinstrument, and list the SQL a request sends.

  .venv/bin/python bench/profile_request.py [sandbox|twilio|baseline] [--requests 500]
      [--cprofile | --timeit | --html out.html]

It builds the same database and seed as bench/run (in burki_bench_profile), starts the fake
Twilio, then sends the requests through Django's test client (the whole middleware and DRF
stack, no HTTP server) with DEBUG off.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", nargs="?", default="sandbox")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--html")
    parser.add_argument("--cprofile", action="store_true", help="cProfile's flat view instead")
    parser.add_argument("--timeit", action="store_true", help="only time the requests")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/burki_bench_profile"
    )
    args = parser.parse_args()
    from cryptography.fernet import Fernet
    from pyinstrument import Profiler

    twilio_port = bench.free_port(set())
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "burki.settings",
            "DATABASE_URL": args.database_url,
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "PUBLIC_BASE_URL": "http://127.0.0.1:38000",
            "TWILIO_API_BASE_URL": f"http://127.0.0.1:{twilio_port}",
            "ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    sys.path.insert(0, str(bench.ROOT))
    bench.recreate_database(args.database_url)
    subprocess.run(  # noqa: S603 (our own venv's programs)
        [str(bench.BIN / "python"), "manage.py", "migrate", "--verbosity", "0"],
        cwd=bench.ROOT,
        check=True,
    )
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    fake = subprocess.Popen(  # noqa: S603 (our own venv's programs)
        [str(bench.BIN / "python"), str(bench.ROOT / "bench" / "fake_twilio.py"), str(twilio_port)]
    )
    try:
        bench.wait_for_port(twilio_port)
        seed = bench.seed()  # it places a Twilio call, for the webhook scenario
        client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {seed.api_key}")
        if args.scenario == "baseline":

            def send():  # type: ignore[no-untyped-def]
                return client.get(f"/calls/{seed.baseline_call_id}")
        else:
            number = bench.SANDBOX_NUMBER if args.scenario == "sandbox" else bench.TWILIO_NUMBER
            body = bench.initiate_body(number)

            def send():  # type: ignore[no-untyped-def]
                return client.post("/calls/initiate", body, content_type="application/json")

        for _ in range(20):
            assert send().status_code == 200
        with CaptureQueriesContext(connection) as queries:
            send()
        for n, query in enumerate(queries.captured_queries, 1):
            print(f"{n:>2}. {query['time']}s {query['sql'][:300]}")
        if args.timeit:
            import time
            from collections import defaultdict

            spent: dict[str, list[float]] = defaultdict(list)

            def timed(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return execute(sql, params, many, context)
                finally:
                    spent[" ".join(sql.split()[:4])[:60]].append(time.perf_counter() - started)

            with connection.execute_wrapper(timed):
                for _ in range(args.requests):
                    send()
            for statement, times in spent.items():
                print(f"  {sum(times) / args.requests * 1000:6.3f} ms/request  {statement}")

            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.requests):
                send()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{args.scenario}: {wall / args.requests * 1000:.2f} ms wall, "
                f"{cpu / args.requests * 1000:.2f} ms CPU in this process per request"
            )
            return
        if args.cprofile:
            import cProfile
            import pstats

            with cProfile.Profile() as cprofiler:
                for _ in range(args.requests):
                    send()
            stats = pstats.Stats(cprofiler)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumtime").print_stats(60)
            return
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(args.requests):
            send()
        profiler.stop()
        if args.html:
            Path(args.html).write_text(profiler.output_html())
        print(
            profiler.output_text(
                unicode=True, color=False, show_all=bool(os.environ.get("PROFILE_ALL"))
            )
        )
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
