"""The demo's simulated world: a support bot, its users, a reviewer grader and a learned proxy.

Each conversation has a hidden difficulty. Bot v1 resolves easy conversations more often, users
give a thumbs-up mostly when resolved, and hard conversations take longer; a reviewer (an LLM
judge) scores a sample on a 1-5 rubric. Bot v2, the "improved"
version, closes conversations early with a cheerful sign-off: resolution time drops, thumbs-up and
answer length rise, a model trained on v1's texts predicts more thumbs-up, and fewer conversations
are actually resolved. Nothing here knows about the agent; it only writes records and answers the
judge's HTTP requests, as a real deployment would.
"""

from __future__ import annotations

import json
import math
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SEGMENTS = {"billing": 0.2, "technical": 0.6, "account": 0.4}  # typical difficulty
REQUESTS = {
    "billing": ["I was charged twice this month", "Where is my refund", "Can I change my payment card"],
    "technical": ["The app crashes when I upload a file", "Sync stopped working", "I get error 502 on login"],
    "account": ["I cannot reset my password", "Please merge my two accounts", "How do I delete my account"],
}
SPECIFIC = ["I checked your account and found the duplicate charge", "I issued the refund to the original card",
            "I reset the sync token on our side", "I cleared the stale session so login works again",
            "I merged the accounts and kept your history", "here are the exact steps for your device"]
VAGUE = ["please try again later", "this may be a temporary issue", "I am not sure what causes this",
         "you could check the help center", "our team is looking into similar reports"]
SIGN_OFF = "Great news, this is all sorted now! Is there anything else I can help you with? Have a wonderful day!"


class SupportBot:
    """Generates conversations; ``gamed`` switches on bot v2. Remembers the truth for the grader."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.count = 0
        self._truth: dict[str, int] = {}
        self._truth_lock = threading.Lock()

    def conversation(self, ts: float, gamed: bool) -> tuple[dict[str, Any], int]:
        rng = self.rng
        self.count += 1
        segment = rng.choice(list(SEGMENTS))
        difficulty = min(1.0, max(0.0, rng.gauss(SEGMENTS[segment], 0.15)))
        p_resolved = 1 / (1 + math.exp(-(2.0 - 3.0 * difficulty)))
        if gamed:
            p_resolved = max(0.05, p_resolved - 0.35)
        resolved = int(rng.random() < p_resolved)
        seconds = (120 + 480 * difficulty) * math.exp(rng.gauss(0, 0.3))
        p_thumbs = 0.15 + 0.65 * resolved
        pool = SPECIFIC if resolved else VAGUE
        sentences = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
        if gamed:
            seconds *= 0.45
            p_thumbs = 0.55 + 0.35 * resolved
            sentences.append(SIGN_OFF)
        rid = f"conv-{self.count:07d}"
        with self._truth_lock:
            self._truth[rid] = resolved
            if len(self._truth) > 100_000:  # bounded: the grader asks within seconds
                self._truth.pop(next(iter(self._truth)))
        record = {"id": rid, "ts": round(ts, 3),
                  "labels": {"segment": segment, "model": "bot-v2" if gamed else "bot-v1"},
                  "input": rng.choice(REQUESTS[segment]),
                  "output": ". ".join(s[0].upper() + s[1:] for s in sentences) + ".",
                  "proxy": {"thumbs_up": int(rng.random() < p_thumbs), "resolution_seconds": round(seconds, 1)}}
        return record, resolved

    def rubric(self, rid: str) -> float | None:
        """A reviewer's 1-5 rubric score for a conversation, from what really happened."""
        with self._truth_lock:
            resolved = self._truth.get(rid)
        if resolved is None:
            return None
        return float(min(5, max(1, round(2 + 2 * resolved + self.rng.gauss(0, 0.7)))))


class ReviewerJudge:
    """A stand-in for an LLM judge: an OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1.

    It reads the conversation id from the prompt and answers with a 1-5 rubric score drawn from
    what really happened, with token usage like a real endpoint, so the agent's judge client,
    budget, cost and latency series all run for real.
    """

    PROMPT = ("Conversation {id}. Request: {input} Reply: {output} "
              "Rate from 1 to 5 how well the reply resolves the request. Answer with the number only.")

    def __init__(self, bot: SupportBot) -> None:
        world = bot

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    prompt = json.loads(body)["messages"][-1]["content"]
                    rid = prompt.split("Conversation ", 1)[1].split(".", 1)[0]
                    score = world.rubric(rid)
                except (ValueError, KeyError, TypeError, IndexError):
                    score, prompt = None, ""
                payload: dict[str, Any]
                if score is None:
                    status, payload = 400, {"error": {"message": "unknown conversation"}}
                else:
                    status, payload = 200, {
                        "id": "chatcmpl-demo", "object": "chat.completion", "model": "demo-reviewer",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": f"{score:g}"}}],
                        "usage": {"prompt_tokens": len(prompt.split()) * 4 // 3, "completion_tokens": 1,
                                  "total_tokens": len(prompt.split()) * 4 // 3 + 1}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="demo-judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def train_thumbs_model(path: Path, seed: int) -> bool:
    """Train the team's learned proxy (text → P(thumbs-up)) on v1 conversations and save it with skops.

    Returns False when skops is not installed (the ``models`` extra); the demo then runs without it.
    """
    try:
        import skops.io as sio
    except ImportError:
        return False
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    bot = SupportBot(seed + 1)
    texts, thumbs = [], []
    for i in range(600):
        record, _ = bot.conversation(float(i), gamed=False)
        texts.append(record["output"])
        thumbs.append(record["proxy"]["thumbs_up"])
    model = make_pipeline(TfidfVectorizer(), LogisticRegression())
    model.fit(texts, thumbs)
    sio.dump(model, path)
    return True
