"""Speech recognition and decoding benchmark (bench/asr.sh runs it).

1. WER and real-time factor of `rop transcribe` (whisper.cpp, Whisper base,
   language ru, Silero VAD, 2 threads) on 60 Russian Asterisk prompts with
   at least four words, next to faster-whisper on the same files with the
   same weights (CTranslate2 int8, greedy, VAD on, 2 threads).
2. Decoding to 16 kHz per channel: rop-audio against ffmpeg doing the same
   (decode + resample to 16 kHz float) on a 5-minute stereo call in several
   formats.
Prints a Markdown report; everything is measured in this one run.
"""

import gzip
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

root = Path(sys.argv[1])          # repository
rop = Path(sys.argv[2])           # release binary
decode_speed = Path(sys.argv[3])  # example binary
models = Path(sys.argv[4])        # models dir (ggml + wheels cache)
ct2_dir = Path(sys.argv[5])       # CTranslate2 model dir for faster-whisper
data = Path(sys.argv[6])          # test data (asterisk + e2e)
work = Path(sys.argv[7])          # scratch
threads = "2"

sounds = data / "asterisk/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU"
texts = data / "asterisk/usr/share/doc/asterisk-core-sounds-ru/core-sounds-ru.txt.gz"


def normalise(text):
    text = text.lower().replace("ё", "е")
    text = re.sub(r"[^\w\s]", " ", text)
    return text.split()


def edits(ref, hyp):
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def prompts():
    chosen = []
    for line in gzip.open(texts, "rt", encoding="utf-8"):
        if ":" not in line or line.startswith(";"):
            continue
        name, text = line.split(":", 1)
        text = text.strip()
        path = sounds / f"{name.strip()}.wav"
        if text.startswith("[") or not path.is_file() or len(normalise(text)) < 4:
            continue
        chosen.append((path, text))
    chosen.sort()
    return chosen[:60]


def wav_seconds(path):
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def wer(pairs):
    pairs = list(pairs)
    errors = sum(edits(normalise(ref), normalise(hyp)) for ref, hyp in pairs)
    words = sum(len(normalise(ref)) for ref, _ in pairs)
    return errors / words


def run_rop(files):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROP_")}
    env.update({"ROP_ASR_THREADS": threads, "RUST_LOG": "warn"})
    started = time.perf_counter()
    out = subprocess.run(
        [str(rop), "--models-dir", str(models), "transcribe", "--json", *map(str, files)],
        capture_output=True, text=True, env=env, check=True,
    )
    elapsed = time.perf_counter() - started
    texts = []
    for line in out.stdout.splitlines():
        doc = json.loads(line)
        texts.append(" ".join(s["text"] for s in doc["transcript"]["segments"]))
    return texts, elapsed


FASTER_WHISPER = r"""
import sys, time, json
started = time.perf_counter()
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[2]))
out = []
for path in sys.argv[3:]:
    segments, _ = model.transcribe(path, language="ru", beam_size=1, vad_filter=True,
                                   condition_on_previous_text=False)
    out.append(" ".join(s.text.strip() for s in segments))
print(json.dumps({"texts": out, "elapsed": time.perf_counter() - started}))
"""


def run_faster_whisper(files):
    python = work / "fw/bin/python"
    started = time.perf_counter()
    out = subprocess.run(
        [str(python), "-c", FASTER_WHISPER, str(ct2_dir), threads, *map(str, files)],
        capture_output=True, text=True, check=True,
    )
    elapsed = time.perf_counter() - started
    return json.loads(out.stdout)["texts"], elapsed


def decoding():
    """A 5-minute stereo call in every format, rop-audio vs ffmpeg."""
    calls = work / "decode"
    calls.mkdir(exist_ok=True)
    base = calls / "call.wav"
    if not base.exists():
        names = [str(p) for p, _ in prompts()]
        subprocess.run(["sox", *names, str(calls / "left.wav")], check=True)
        subprocess.run(["sox", *reversed(names), str(calls / "right.wav")], check=True)
        subprocess.run(["sox", "-M", str(calls / "left.wav"), str(calls / "right.wav"),
                        str(calls / "long.wav")], check=True)
        subprocess.run(["sox", str(calls / "long.wav"), str(base), "trim", "0", "300"], check=True)
    formats = {
        "WAV PCM 8 kHz": ("call.wav", []),
        "WAV µ-law 8 kHz": ("call-ulaw.wav", ["-c:a", "pcm_mulaw"]),
        "MP3 44.1 kHz 64k": ("call.mp3", ["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "64k"]),
        "Ogg Vorbis 22 kHz": ("call.ogg", ["-ar", "22050", "-c:a", "libvorbis"]),
        "Ogg Opus 48 kHz": ("call.opus", ["-ar", "48000", "-c:a", "libopus", "-b:a", "32k"]),
        "FLAC 8 kHz": ("call.flac", ["-c:a", "flac"]),
        "M4A AAC 16 kHz": ("call.m4a", ["-ar", "16000", "-c:a", "aac", "-b:a", "48k"]),
    }
    rows = []
    for title, (name, codec) in formats.items():
        path = calls / name
        if not path.exists():
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(base),
                            *codec, str(path)], check=True)
        ours = json.loads(subprocess.run([str(decode_speed), "--repeat", "5", str(path)],
                                         capture_output=True, text=True, check=True).stdout)
        best = None
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1",
                            "-i", str(path), "-ar", "16000", "-f", "f32le", "-y", "/dev/null"],
                           check=True)
            took = time.perf_counter() - started
            best = took if best is None else min(best, took)
        rows.append((title, ours["audio_secs"], ours["best_secs"], best))
    return rows


def main():
    chosen = prompts()
    files = [p for p, _ in chosen]
    audio = sum(wav_seconds(p) for p in files)
    refs = [t for _, t in chosen]
    ours, ours_time = run_rop(files)
    theirs, their_time = run_faster_whisper(files)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Машина: {cpu}, {os.cpu_count()} ядра, {platform.system()} {platform.release()}; "
          f"потоков распознавания: {threads}.\n")
    print(f"Распознавание: {len(files)} фраз Asterisk (≥ 4 слов), {audio:.0f} с речи, язык ru.\n")
    print("| движок | WER | время, с | RTF |")
    print("|---|---|---|---|")
    print(f"| rop (whisper.cpp, base, VAD) | {wer(zip(refs, ours)) * 100:.1f} % | {ours_time:.1f} | {ours_time / audio:.3f} |")
    print(f"| faster-whisper (base, int8, VAD) | {wer(zip(refs, theirs)) * 100:.1f} % | {their_time:.1f} | {their_time / audio:.3f} |")
    print(f"\nНаше время / faster-whisper: {ours_time / their_time:.2f} (оба замера включают загрузку модели).\n")
    print("Декодирование 5-минутного стерео-звонка в 16 кГц по каналам (лучшее из 5, один поток):\n")
    print("| формат | rop-audio, мс | ffmpeg, мс | rop / ffmpeg | скорость rop, × реального времени |")
    print("|---|---|---|---|---|")
    for title, seconds, ours_s, ffmpeg_s in decoding():
        print(f"| {title} | {ours_s * 1000:.0f} | {ffmpeg_s * 1000:.0f} | {ours_s / ffmpeg_s:.2f} | {seconds / ours_s:.0f} |")
    misses = [(r, h) for r, h in zip(refs, ours) if normalise(r) != normalise(h)]
    print(f"\nФразы с ошибками у rop: {len(misses)} из {len(refs)}; первые пять:")
    for ref, hyp in misses[:5]:
        print(f"- «{ref}» → «{hyp}»")


main()
