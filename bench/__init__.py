"""`qwen-edge bench`: latency and memory of export folders against the runtimes users would pick.
Kept out of qwen_edge.runtime, which apps embed: `measure` (cases, runners, one case in a fresh
process), `report` (Markdown and PNG plots)."""
