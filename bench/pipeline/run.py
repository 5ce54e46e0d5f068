"""End-to-end benchmark of one call (bench/pipeline.sh runs it).

A 5-minute stereo Russian sales call (Festival, bench/pipeline/dialogue.txt)
is uploaded by link to a real `rop serve` (release build, SQLite, embedded
models, 2 recognition and 2 language-model threads); the clock runs from the
upload request to the moment this script's loopback receiver has both
webhooks (checklist and table). Per step: the time between the finishes of
consecutive jobs (each job is queued when the previous one finishes). The
language model's prompt and answer tokens per second come from `rop-llm`'s
log lines.

In the same run, as baselines: the recording's own length (so the figure is
also a real-time factor) and the same call with phrase rules instead of the
language model (`llm_engine = none`: what the model costs on top).
Prints a Markdown report.
"""

import http.server
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

rop = Path(sys.argv[1])        # release binary (rop-llm beside it)
models = Path(sys.argv[2])     # models directory
audio = Path(sys.argv[3])      # the 5-minute call
warmup = Path(sys.argv[4])     # a short call that loads every model first

CHECKLIST = {
    "checklist_id": "sales_script",
    "name": "Скрипт продаж",
    "general_instruction": "Звонок по входящей заявке на замену окон.",
    "stages": [
        {"stage_id": "greeting", "name": "Приветствие",
         "instruction": "Менеджер поздоровался, назвал своё имя и компанию."},
        {"stage_id": "needs", "name": "Выявление потребности",
         "instruction": "Менеджер выяснил, что именно нужно клиенту: сколько окон, какие, где."},
        {"stage_id": "budget", "name": "Выявление бюджета",
         "instruction": "Менеджер спросил, на какую сумму рассчитывает клиент."},
        {"stage_id": "presentation", "name": "Презентация решения",
         "instruction": "Менеджер предложил конкретное решение и объяснил его пользу для клиента."},
        {"stage_id": "next_step", "name": "Следующий шаг",
         "instruction": "Менеджер договорился о конкретном следующем шаге с датой и временем."},
    ],
}

TABLE = {
    "table_id": "TBL_1760000000",
    "name": "Заявка на окна",
    "columns": [
        {"key": "windows", "title": "Сколько окон менять", "type": "integer"},
        {"key": "visit_booked", "title": "Договорились о замере", "type": "boolean"},
        {"key": "premises", "title": "Где окна", "type": "enum",
         "values": ["квартира", "частный дом", "офис"]},
        {"key": "floor", "title": "Этаж", "type": "integer"},
        {"key": "address", "title": "Адрес замера", "type": "string"},
    ],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Webhooks on loopback, with the moment each arrived."""

    def __init__(self):
        self.arrivals = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.arrivals.append((time.monotonic(), self.headers.get("X-Rop-Event"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait(self, call_id, events, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            got = [a for a in self.arrivals if a[2].get("call_id") == call_id]
            if {a[1] for a in got} >= set(events):
                return got
            time.sleep(0.05)
        raise SystemExit(f"webhooks of {call_id} did not arrive in {limit} s")


class Files:
    """The recordings, served on loopback for upload by link."""

    def __init__(self, directory):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=directory, **k)
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.server = QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"


class QuietServer(http.server.ThreadingHTTPServer):
    """rop's upload-time probe reads the first bytes and hangs up: expected."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Rop:
    def __init__(self, data, engine, log):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, ROP_FETCH_ALLOW_LOOPBACK="true", ROP_RATE_LIMIT_PER_MINUTE="0",
                   ROP_LLM_ENGINE=engine, ROP_WEBHOOK_RETRY_BASE_SECS="1",
                   RUST_LOG="info,llama-cpp-2=warn")
        args = ["--data-dir", str(data), "--models-dir", str(models)]
        self.key = subprocess.run([rop, *args, "api-key", "show"], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.log = open(log, "w")
        self.process = subprocess.Popen([rop, *args, "serve", "--listen", f"127.0.0.1:{self.port}"],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/readyz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"rop serve did not start, see {log}")
                time.sleep(0.2)

    def request(self, method, path, body=None, form=None):
        data, headers = None, {"X-Api-Key": self.key}
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def llm_answers(log):
    """(prompt tokens read, seconds, answer tokens, seconds) per answer."""
    found = []
    for line in open(log, encoding="utf-8", errors="replace"):
        if "answered" not in line:
            continue
        fields = dict(re.findall(r"(\w+)=([\d.]+)", line))
        if "prompt_tokens" in fields:
            found.append((int(fields["prompt_tokens"]) - int(fields["cached_tokens"]),
                          float(fields["prompt_secs"]), int(fields["completion_tokens"]),
                          float(fields["generation_secs"]), int(fields["cached_tokens"])))
    return found


def parse_time(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run(engine, files, work):
    data = Path(tempfile.mkdtemp(dir=work, prefix=f"data-{engine}-"))
    log = work / f"rop-{engine}.log"
    receiver = Receiver()
    server = Rop(data, engine, log)
    try:
        hook = {"url": receiver.url, "secret": "bench"}
        server.request("POST", "/api/v1/checklists", {**CHECKLIST, "webhook": hook})
        server.request("POST", "/api/v1/tables", {**TABLE, "webhook": hook})
        events = ["checklist.result", "table.result"] if engine != "none" else ["checklist.result"]
        # Every model loaded and warm before the clock starts.
        server.request("POST", "/api/v1/calls/audio-upload",
                       form={"call_id": "warmup", "manager_id": "m1",
                             "audio_url": f"{files.base}/{warmup.name}"})
        receiver.wait("warmup", events, 900)
        answers_before = len(llm_answers(log))

        started_wall = time.time()
        started = time.monotonic()
        server.request("POST", "/api/v1/calls/audio-upload",
                       form={"call_id": "call-5min", "manager_id": "m1",
                             "audio_url": f"{files.base}/{audio.name}"})
        arrived = receiver.wait("call-5min", events, 1800)
        total = max(a[0] for a in arrived) - started
        call = server.request("GET", "/api/v1/calls/call-5min")
        steps, previous = [], started_wall
        for job in call["jobs"]:
            finished = parse_time(job["updated_at"])
            steps.append((job["kind"], finished - previous))
            previous = finished
        steps.append(("webhooks", started_wall + total - previous))
        answers = llm_answers(log)[answers_before:]
        bodies = {a[1]: a[2] for a in arrived}
        return {"total": total, "steps": steps, "answers": answers, "bodies": bodies,
                "segments": len(call["transcript"]["segments"])}
    finally:
        server.stop()


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} ядра, {cpu}, {mem:.1f} ГиБ, {platform.system()} {platform.release()}"


def main():
    duration = float(subprocess.run(["soxi", "-D", str(audio)], capture_output=True, text=True,
                                    check=True).stdout)
    work = Path(tempfile.mkdtemp(prefix="rop-bench-pipeline-"))
    files = Files(str(audio.parent))
    assert warmup.parent == audio.parent, "both recordings are served from one directory"
    local = run("local", files, work)
    rules = run("none", files, work)

    print(f"Машина: {machine()}; {time.strftime('%d.%m.%Y')}.")
    print(f"Запись: {duration:.0f} с, стерео 8 кГц, {local['segments']} реплик после распознавания.\n")
    print("| | языковая модель (по умолчанию) | правила фраз |")
    print("|---|---|---|")
    names = {"download": "скачивание", "decode": "декодирование", "transcribe": "распознавание",
             "analyze": "анализ", "webhooks": "доставка вебхуков"}
    rules_steps = dict(rules["steps"])
    for kind, secs in local["steps"]:
        other = rules_steps.get(kind)
        print(f"| {names.get(kind, kind)}, с | {secs:.1f} | {'' if other is None else f'{other:.1f}'} |")
    print(f"| **всего, от загрузки до вебхуков, с** | **{local['total']:.1f}** | {rules['total']:.1f} |")
    print(f"| всего / длительность записи | {local['total'] / duration:.3f} | {rules['total'] / duration:.3f} |")
    print(f"| языковая модель / правила | {local['total'] / rules['total']:.2f} | 1 |")
    print()
    if local["answers"]:
        read = sum(a[0] for a in local["answers"])
        read_secs = sum(a[1] for a in local["answers"])
        wrote = sum(a[2] for a in local["answers"])
        wrote_secs = sum(a[3] for a in local["answers"])
        cached = sum(a[4] for a in local["answers"])
        print(f"Языковая модель: {len(local['answers'])} ответа; прочитано {read} токенов запроса "
              f"за {read_secs:.1f} с ({read / read_secs:.1f} ток/с), ещё {cached} взято из кэша; "
              f"написано {wrote} токенов за {wrote_secs:.1f} с ({wrote / wrote_secs:.1f} ток/с).\n")
    checklist = local["bodies"].get("checklist.result", {})
    print("Результат чек-листа: " + ", ".join(
        f"{s['stage_id']} — {s['status']}" for s in checklist.get("stages", [])))
    print("Таблица: " + json.dumps(local["bodies"].get("table.result", {}).get("extracted_data"),
                                   ensure_ascii=False))


main()
