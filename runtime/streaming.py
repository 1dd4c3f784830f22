"""Token ids in, text pieces out: always whole UTF-8 characters, and never past a stop string.

Byte-level BPE splits one character over several tokens (CJK, emoji); decoding such a token
alone gives U+FFFD. The streamer decodes a short window of recent tokens and holds back any text
that ends in U+FFFD until the next token completes it. Text that could still become a stop
string is held back too, so a stop string never reaches the caller, even in part.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextStreamer:
    def __init__(self, decode, stop: tuple[str, ...] = ()):
        self.decode, self.stop = decode, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.prefix = 0  # tokens[prefix:read] decode to text already accounted for
        self.read = 0
        self.text = ""  # all complete text so far (emitted + held back for stop strings)
        self.sent = 0  # len(text) already given out
        self.stopped = False

    def put(self, token: int) -> str:
        """The text that `token` makes safe to show ("" while a character or a stop string is
        incomplete). After a stop string, `stopped` is True and nothing more comes."""
        if self.stopped:
            return ""
        self.tokens.append(token)
        before = self.decode(self.tokens[self.prefix : self.read])
        now = self.decode(self.tokens[self.prefix :])
        if now.endswith(REPLACEMENT) or len(now) <= len(before):
            return ""  # an incomplete character: wait for the rest of its bytes
        self.text += now[len(before) :]
        self.prefix, self.read = self.read, len(self.tokens)
        return self._release(final=False)

    def end(self) -> str:
        """What is left once generation is over (held-back text, an unfinished character)."""
        if self.stopped:
            return ""
        tail = self.decode(self.tokens[self.prefix :])
        before = self.decode(self.tokens[self.prefix : self.read])
        self.text += tail[len(before) :]
        self.prefix = self.read = len(self.tokens)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop) + 1))
            if at != -1:
                self.text, self.stopped = self.text[:at], True
        keep = len(self.text) if final or self.stopped else len(self.text) - self._partial_stop()
        piece, self.sent = self.text[self.sent : keep], max(self.sent, keep)
        return piece

    def _partial_stop(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
