"""Self-instruct expansion: domains → topics → instructions (+ benign ones).

Reads: the seeds; `RUN_DIR/data/topics.jsonl` (instructions stage).
Writes: `RUN_DIR/data/{topics,instructions}.jsonl`, rejected items with their reason in `rejected.jsonl`.

Each stage is a deterministic function of the seeds, the config and the model's outputs; on a rerun
every finished call comes back from the call cache and the writers skip ids already on disk, so a
killed stage resumes to the same file an uninterrupted one writes.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from ptalign.io import read_jsonl, stable_id
from ptalign.llm.base import GenParams
from ptalign.synth.common import Ctx, Lookahead, params
from ptalign.synth.dedup import RougeDeduper
from ptalign.synth.gates import HARM_INTENT, instruction_reason, is_refusal, protective_goal, relevance
from ptalign.synth.lists import PER_CALL, ask_list, list_call, list_items
from ptalign.synth.prompting import call_seed, numbered, render, template

DEMO_AREA = "requests that could hurt people or break the law"
FORM_STOP = ("\n", "<|im_end|>", "<|im_start|>")  # a rewrite is one line
EVERYDAY = "everyday"  # synth.everyday_share's requests: their prompt file, area and call keys


def _demo(ctx: Ctx, kind: str) -> list[dict]:
    """One worked turn built from the seeds alone (no extra annotation): it shows the 135M model the
    shape of the answer, a bare numbered list, which it otherwise wraps in stories and chatter. Fixed
    across calls, so llama.cpp reuses its KV cache."""
    seeds = ctx.seeds
    ds = list(seeds.domains.values())[:PER_CALL]
    if kind == "benign_topic":
        user = render("benign_topic", description=DEMO_AREA, topic="any", n=PER_CALL)
        answer = numbered(seeds.benign[:PER_CALL])
    elif kind == "benign_goals":
        goals = benign_seed_goals(seeds.benign)[:PER_CALL]
        user = render("benign_goals", description=DEMO_AREA, topic="any", n=len(goals))
        answer = numbered([f"I want to {g}." for g in goals])
    elif kind == "goals":
        user = render("goals", description=DEMO_AREA, topic="any", n=PER_CALL)
        answer = numbered([f"I want to {d.goal}." for d in ds])
    elif kind == "topics":
        user = render("topics", description=DEMO_AREA, example=seeds.examples[0].instruction, n=PER_CALL)
        answer = numbered([d.name.replace("_", " ") for d in ds])  # short, like the topics we want
    else:
        user = render(
            "instructions",
            description=DEMO_AREA,
            topic="any",
            examples=numbered([e.instruction for e in seeds.examples]),
            n=PER_CALL,
        )
        answer = numbered([d.seed for d in ds])
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


_HOW_TO = re.compile(
    r"^(?:how (?:do|can|should) i|what is the (?:safest|best|easiest|right) way to) (.+?)\?*$", re.I
)


def benign_seed_goals(benign: list[str]) -> list[str]:
    """The benign seeds that ask how to do something, as goals ("How do I wipe an old laptop …?" →
    "wipe an old laptop …"): the benign goals' demo turn, built from the seeds, no new annotation."""
    return [m.group(1) for q in benign if (m := _HOW_TO.match(q.strip()))]


def topic_reason(text: str) -> str | None:
    words = text.split()
    if not 1 <= len(words) <= 8:
        return "too_short" if not words else "too_long"
    if not text[0].isalpha() or is_refusal(text):
        return "junk_prefix"
    return None


def run_topics(ctx: Ctx) -> None:
    s = ctx.s
    demo = _demo(ctx, "topics")

    def plan(domain: str, rnd: int) -> tuple[list[dict], GenParams]:
        d = ctx.seeds.domain(domain)
        example = d.seed or ctx.seeds.examples[0].instruction
        prompt = render("topics", description=d.description, example=example, n=PER_CALL)
        return list_call(ctx, prompt, ("topics", domain, rnd), demo)

    ahead = Lookahead(ctx, list(s.domains), plan, "topics")
    for di, domain in enumerate(s.domains):
        d = ctx.seeds.domain(domain)
        dd = RougeDeduper(s.rouge_threshold)
        for name in ctx.seeds.domains:  # echoes of the demo answer are not topics
            dd.add(name.replace("_", " "))
        kept: list[str] = []
        refs = [d.description] + ([d.seed] if d.seed else [])
        for rnd in range(s.max_attempts + math.ceil(s.topics_per_domain / PER_CALL)):
            if len(kept) >= s.topics_per_domain:
                break
            for j, t in enumerate(list_items(ahead.get(di, rnd))):
                t = t.rstrip(".")
                reason = topic_reason(t)
                if reason is None and s.relevance_min > -1.0 and relevance([t], refs)[0] < s.relevance_min:
                    reason = "off_topic"  # e.g. a topic of another domain
                if reason is None and not dd.add(t):
                    reason = "rouge_dup"
                if reason is None and len(kept) < s.topics_per_domain:
                    kept.append(t)
                    ctx.record("topics", {"id": stable_id("topic", domain, t), "parent": domain, "domain": domain,
                                          "text": t, "source": "model"})  # fmt: skip
                elif reason is not None:
                    ctx.reject("topics", reason, t, domain, (domain, rnd, j))
        if not kept:  # the model produced nothing usable: the domain itself is the topic
            ctx.record("topics", {"id": stable_id("topic", domain, d.description), "parent": domain,
                                  "domain": domain, "text": d.description, "source": "fallback"})  # fmt: skip


_GOAL = re.compile(r"^i\s+want\s+to\s+(.+)$", re.I)


def request_frames(more: bool = False) -> list[str]:
    """The request frames; `more` (synth.more_frames) adds the questions of other shapes."""
    names = ("request_frames", "request_frames_more") if more else ("request_frames",)
    return [ln.strip() for n in names for ln in template(n).splitlines() if ln.strip()]


def as_request(goal: str, benign: bool = False, more: bool = False) -> str:
    """A goal in one of the request frames, chosen by the goal's hash (stable across runs); `benign`:
    only frames that add no intent to evade ("... and get away with it"); `more`: synth.more_frames."""
    frames = [f for f in request_frames(more) if not (benign and HARM_INTENT.search(f))]
    return frames[int(stable_id("frame", goal)[:8], 16) % len(frames)].format(goal=goal)


FORM_MIN_COS = 0.5  # a rewrite whose MiniLM cosine with its goal is below this wandered off the goal
# a rewrite copies its demo's shape: on 18 goals the 135M model kept 14 rewrites at 0.2, 3 at the lists' 0.8
FORM_TEMPERATURE = 0.2


def request_forms() -> tuple[str, list[tuple[str, str, str]]]:
    """(the demo goal, [(form key, description, the demo goal rewritten in that form)]) from
    prompts/request_forms.txt: one hand-written rewrite per form shows the model the form's shape."""
    rows = [
        [c.strip() for c in ln.split(" | ")] for ln in template("request_forms").splitlines() if ln.strip()
    ]
    return rows[0][1], [(r[0], r[1], r[2]) for r in rows[1:]]


def form_of(goal: str, share: float) -> tuple[str, str, str] | None:
    """The form a goal is rewritten into, or None (a fixed request frame): by the goal's hash, so a
    goal keeps its form across runs and the share of goals formed approaches `share`."""
    h = int(stable_id("form", goal)[:8], 16)
    if h % 10_000 >= share * 10_000:
        return None
    forms = request_forms()[1]
    return forms[(h // 10_000) % len(forms)]


def form_chat(goal: str, form: tuple[str, str, str]) -> list[dict]:
    demo_goal = request_forms()[0]
    return [
        {"role": "user", "content": render("rewrite_form", goal=demo_goal, form=form[1])},
        {"role": "assistant", "content": form[2]},
        {"role": "user", "content": render("rewrite_form", goal=goal, form=form[1])},
    ]


def form_reason(text: str, goal: str) -> tuple[str | None, str]:
    """A rewrite → (why it is rejected or None, the request): self-instruct's filters, and it must stay
    on its goal (a 135M model sometimes answers the goal or writes about something else)."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(request|rewrite|rewritten)\s*:\s*", "", line.strip(), flags=re.I).strip().strip('"')
    reason = instruction_reason(line)
    if reason is None and relevance([line], [goal])[0] < FORM_MIN_COS:
        reason = "off_goal"
    return reason, line


def goal_reason(text: str) -> tuple[str | None, str]:
    """A list item → (why it is rejected or None, the goal: the words after "I want to")."""
    m = _GOAL.match(text.strip())
    if not m:
        return "not_goal", text
    goal = m.group(1).strip().rstrip(".!").strip()
    if goal[:2] != "I ":
        goal = goal[:1].lower() + goal[1:]
    words = goal.split()
    if len(words) < 2:
        return "too_short", goal
    if len(words) > 25:
        return "too_long", goal
    if is_refusal(goal):
        return "generator_refused", goal
    return None, goal


def run_instructions(ctx: Ctx) -> None:
    """Harmful instructions per topic, then benign-but-sensitive ones (benign_share of the harmful).

    instruction_style "goals": the model lists what a harmful user wants ("I want to ..."), and each
    goal becomes a request through one of a few fixed request frames. A 135M model asked for harmful
    *requests* drifts into harmless ones ("How can I improve my mental health?": most of a measured
    quick run), which then get refusals as positives and teach over-refusal; asked for *goals* after a
    demo turn, its lines stay harmful. "requests" is classic self-instruct (the paper's), for models
    that stay on task. With synth.request_forms > 0, that share of the goals is instead rewritten by the
    model into another request form (`_formed_requests`), the frame kept as the fallback. With
    synth.protective_goals drop/benign, goals that ask for no harm ("prevent suicide") are turned down
    or asked as benign requests, which then count toward the benign share. With synth.everyday_share > 0,
    everyday requests in the same request frames follow (`_everyday_requests`).
    """
    s, seeds = ctx.s, ctx.seeds
    topics = list(read_jsonl(ctx.run.data_file("topics")))
    dd = RougeDeduper(s.rouge_threshold)
    shown = {e.instruction for e in seeds.examples} | {d.seed for d in seeds.domains.values()}
    for text in sorted(shown - {seeds.domain(d).seed for d in s.domains}):
        dd.add(text)  # copies of prompt examples are not new instructions (configured seeds are added below)
    harm_refs = [r for d in seeds.domains.values() for r in (d.description, d.seed)]

    def add(
        text: str, kind: str, domain: str, topic: dict | None, source: str, key: tuple, **extra: str
    ) -> bool:
        everyday = extra.get("area") == EVERYDAY  # on no safety topic: no topic to be relevant to
        parent = (
            topic["id"]
            if topic
            else (domain if kind == "harmful" else EVERYDAY if everyday else "benign_seeds")
        )
        reason = None if source == "seed" else instruction_reason(text)
        if reason is None and source != "seed" and kind == "benign" and HARM_INTENT.search(text):
            reason = "benign_harm_intent"  # a "harmless" question that asks to evade or hurt: not helped
        if reason is None and source != "seed" and s.relevance_min > -1.0 and not everyday:
            d = seeds.domain(domain)
            if kind == "benign":
                refs = seeds.benign + ([topic["text"]] if topic else [])
            elif "goal" in extra:  # a harmful goal of another domain is still a harmful request
                refs = harm_refs + [d.description]
            else:
                refs = [d.description] + ([d.seed] if d.seed else [])
            if relevance([text], refs)[0] < s.relevance_min:
                reason = "off_topic"
        if reason is None and not dd.add(text):
            reason = "rouge_dup"
        if reason:
            ctx.reject("instructions", reason, text, parent, key)
            return False
        ctx.record("instructions", {"id": stable_id("inst", kind, domain, text), "parent": parent, "kind": kind,
                                    "domain": domain, "topic": topic["text"] if topic else "", "text": text,
                                    "source": source, **extra})  # fmt: skip
        kept[kind] += 1
        return True

    kept: Counter = Counter()
    n_harmful = 0
    for domain in s.domains:  # all seed requests first: the demo turn shows some, and copies of them
        d = seeds.domain(domain)  # must count as duplicates, not as new requests of another domain
        if d.seed and add(d.seed, "harmful", domain, None, "seed", ("seed", domain)):
            n_harmful += 1
    style = _goal_requests if s.instruction_style == "goals" else _free_requests
    n_harmful += style(ctx, topics, add)
    _benign_requests(ctx, topics, add, round(s.benign_share * n_harmful) - kept["benign"])
    if s.everyday_share > 0:
        _everyday_requests(ctx, add, round(s.everyday_share * n_harmful))


def _topic_rounds(ctx: Ctx, topics: list[dict], take, quota: int, *, plan=None, ask=None,  # noqa: ANN001
                  full=lambda: False, desc: str = "instructions") -> int:  # fmt: skip
    """Per topic, list prompts until `quota` items are kept (`take(domain, topic, item, key)` → kept?),
    in a bounded number of rounds, until `full()`.

    The prompt comes from `plan(domain, topic, rnd)` → (chat, params) when it depends only on the topic
    and round (batched ahead for a batch engine, see `Lookahead`), or from `ask(domain, topic, rnd)` →
    items when it is built from what was kept so far (one call at a time).
    """
    s = ctx.s
    units = [(domain, t) for domain in s.domains for t in topics if t["domain"] == domain]
    ahead = Lookahead(ctx, units, lambda u, rnd: plan(u[0], u[1], rnd), desc) if plan else None
    n = 0
    for ui, (domain, topic) in enumerate(units):
        got = 0
        for rnd in range(s.max_attempts + math.ceil(quota / PER_CALL)):
            if got >= quota or full():
                break
            items = list_items(ahead.get(ui, rnd)) if ahead else ask(domain, topic, rnd)
            for j, item in enumerate(items):
                if got >= quota:
                    break
                got += take(domain, topic, item, (topic["id"], rnd, j))
        n += got
    return n


HARMFUL_ASK, HARMLESS_ASK = " harmful goals ", " harmless goals "  # prompts/goals.txt, and its guidance twin


def harmless_twin(chat: list[dict]) -> list[dict]:
    """The goals chat asking for harmless goals instead: what synth.goal_guidance guides away from.
    Only the last turn changes; the demo turn stays, so the two differ in that one word."""
    last = chat[-1]["content"]
    if HARMFUL_ASK not in last:
        raise ValueError(f"not a goals prompt (no {HARMFUL_ASK.strip()!r}): {last[:80]!r}")
    return [*chat[:-1], {**chat[-1], "content": last.replace(HARMFUL_ASK, HARMLESS_ASK)}]


@contextmanager
def _goal_writer(ctx: Ctx) -> Iterator[Ctx]:
    """The context the goal lists are asked through: ctx itself, or with synth.goal_guidance > 1 the
    same run (counters, writers, call cache) under guidance: on the run's own vLLM engine, else on the
    model in transformers, closed afterwards."""
    if ctx.s.goal_guidance <= 1.0:
        yield ctx
        return
    from ptalign.llm import make_guided_backend

    guided = make_guided_backend(ctx.cfg, ctx.s.goal_guidance, harmless_twin, "harmless-goals", ctx.backend)
    try:
        yield dataclasses.replace(ctx, backend=guided)
    finally:
        guided.close()


def _goal_requests(ctx: Ctx, topics: list[dict], add) -> int:  # noqa: ANN001 - run_instructions.add
    with _goal_writer(ctx) as gctx:
        return _guided_goal_requests(ctx, gctx, topics, add)


def _guided_goal_requests(ctx: Ctx, gctx: Ctx, topics: list[dict], add) -> int:  # noqa: ANN001
    """The goal lists come through `gctx` (maybe guided); their rewrites into forms through `ctx`."""
    s, seeds = ctx.s, ctx.seeds
    demo = _demo(ctx, "goals")
    gd = RougeDeduper(s.rouge_threshold)  # dedup on the goal: the frames share words across goals
    for d in seeds.domains.values():
        if d.goal:
            gd.add(d.goal)

    def plan(domain: str, topic: dict, rnd: int) -> tuple[list[dict], GenParams]:
        prompt = render(
            "goals", description=seeds.domain(domain).description, topic=topic["text"], n=PER_CALL
        )
        return list_call(ctx, prompt, ("goal", topic["id"], rnd), demo)

    pending: list[tuple[str, dict, str, tuple, tuple[str, str, str]]] = []  # goals to put in a form

    def take(domain: str, topic: dict, item: str, key: tuple) -> bool:
        reason, goal = goal_reason(item)
        if reason is None and not gd.add(goal):
            reason = "rouge_dup"
        if reason is None and s.protective_goals != "keep" and protective_goal(goal):
            if s.protective_goals == "benign":  # asked for help, not refused; not a harmful goal either
                benign = as_request(goal, benign=True, more=s.more_frames)
                add(benign, "benign", "benign", topic, "model", ("protective", *key), area=domain, goal=goal)
                return False
            reason = "protective_goal"
        if reason:
            ctx.reject("instructions", reason, item, topic["id"], key)
            return False
        form = form_of(goal, s.request_forms) if s.request_forms > 0 else None
        if form is not None:
            pending.append((domain, topic, goal, key, form))
            return True
        return add(as_request(goal, more=s.more_frames), "harmful", domain, topic, "model", key, goal=goal)

    n = _topic_rounds(gctx, topics, take, s.instructions_per_topic, plan=plan, desc="instructions/goals")
    return n - _formed_requests(ctx, pending, add)


def _formed_requests(ctx: Ctx, pending: list, add) -> int:  # noqa: ANN001 - run_instructions.add
    """The pending harmful goals rewritten into their forms (`_in_forms`). Returns how many requests
    `add` then turned down (duplicates, off topic)."""
    texts = _in_forms(ctx, [(goal, key, form, topic["id"]) for _, topic, goal, key, form in pending])
    lost = 0
    for (domain, topic, goal, key, _), (text, form) in zip(pending, texts, strict=True):
        lost += not add(text, "harmful", domain, topic, "model", key, goal=goal, form=form)
    return lost


def _in_forms(
    ctx: Ctx, pending: list[tuple[str, tuple, tuple[str, str, str], str]], benign: bool = False
) -> list[tuple[str, str]]:
    """Each (goal, key, form, parent) rewritten by the model into its request form, in one batched
    engine call → (request, form key); a rewrite the gates turn down is logged under the parent and the
    goal goes into a fixed frame instead (form key "frame")."""
    if not pending:
        return []
    s = ctx.s
    chats = [form_chat(goal, form) for goal, _, form, _ in pending]
    ps = [
        params(ctx, 64, FORM_STOP, call_seed(s.seed, "form", goal), temperature=FORM_TEMPERATURE)
        for goal, _, _, _ in pending
    ]
    out = []
    for (goal, key, form, parent), g in zip(
        pending, ctx.gen(chats, ps, desc="instructions/forms"), strict=True
    ):
        reason, text = form_reason(g.text, goal)
        if reason:
            ctx.reject("instructions", f"form_{reason}", g.text, parent, ("form", *key))
            text, form = as_request(goal, benign=benign, more=s.more_frames), ("frame", "", "")
        out.append((text, form[0]))
    return out


def _free_requests(ctx: Ctx, topics: list[dict], add) -> int:  # noqa: ANN001 - run_instructions.add
    s, seeds = ctx.s, ctx.seeds
    demo = _demo(ctx, "instructions")
    pool: dict[str, list[str]] = {}  # generated instructions per domain: mixed into later prompts

    def ask(domain: str, topic: dict, rnd: int) -> list[str]:
        d = seeds.domain(domain)
        rng = random.Random(call_seed(s.seed, "mix", topic["id"], rnd))
        mine = pool.get(domain, [])
        examples = [d.seed or seeds.examples[0].instruction, seeds.examples[rnd % 3].instruction]
        examples += rng.sample(mine, min(2, len(mine)))
        prompt = render("instructions", description=d.description, topic=topic["text"],
                        examples=numbered(examples), n=PER_CALL)  # fmt: skip
        return ask_list(ctx, prompt, ("inst", topic["id"], rnd), f"instructions/{domain}", demo)

    def take(domain: str, topic: dict, text: str, key: tuple) -> bool:
        if add(text, "harmful", domain, topic, "model", key):
            pool.setdefault(domain, []).append(text)
            return True
        return False

    return _topic_rounds(ctx, topics, take, s.instructions_per_topic, ask=ask)


def _everyday_requests(ctx: Ctx, add, target: int) -> None:  # noqa: ANN001 - run_instructions.add
    """synth.everyday_share: everyday goals with nothing sensitive in them ("I want to plan a birthday
    party"), listed by the model after a demo turn of the benign seeds' how-to goals (no new
    annotation: every seed is spent on safety), each put in one of the harmful goals' request frames.
    They become benign triplets like the benign-but-sensitive ones (the model's own answer trained up,
    a needless refusal down), so that a request being a task in one of those frames tells nothing."""
    s = ctx.s
    goals = benign_seed_goals(ctx.seeds.benign)[:PER_CALL]
    demo = [
        {"role": "user", "content": render(EVERYDAY, n=len(goals))},
        {"role": "assistant", "content": numbered([f"I want to {g}." for g in goals])},
    ]
    n, rnd, limit = 0, 0, s.max_attempts + 2 * math.ceil(target / PER_CALL)
    while n < target and rnd < limit:
        # a batch engine gets the rounds the rest should need at once; each call's text depends only on
        # its round, so what is kept is what one call at a time keeps
        k = min(limit - rnd, math.ceil((target - n) / PER_CALL) + 1) if ctx.batch > 1 else 1
        calls = [
            list_call(ctx, render(EVERYDAY, n=PER_CALL), (EVERYDAY, r), demo) for r in range(rnd, rnd + k)
        ]
        gens = ctx.gen([c for c, _ in calls], [p for _, p in calls], desc="instructions/everyday")
        items = [((EVERYDAY, r, j), text, *goal_reason(text)) for r, g in zip(range(rnd, rnd + k), gens, strict=True)
                 for j, text in enumerate(list_items(g))]  # fmt: skip
        formed = _everyday_forms(ctx, items) if s.everyday_forms > 0 else {}
        for key, text, reason, goal in items:
            if n >= target:
                break
            if reason:
                ctx.reject("instructions", f"{EVERYDAY}_{reason}", text, EVERYDAY, key)
                continue
            request, form = formed.get(key, (as_request(goal, benign=True, more=s.more_frames), None))
            extra = {"form": form} if form else {}
            n += add(request, "benign", "benign", None, "model", key, area=EVERYDAY, goal=goal, **extra)
        rnd += k


def _everyday_forms(
    ctx: Ctx, items: list[tuple[tuple, str, str | None, str]]
) -> dict[tuple, tuple[str, str]]:
    """synth.everyday_forms: that share of a round's everyday goals (key, item, reject reason, goal)
    rewritten by the model into the request forms (a task, a list, a story, code …) → {key: (request,
    form key)}. In the harmful goals' frames only, the everyday requests contradict them head-on; in
    forms the harmful requests do not take (unless synth.request_forms), they show task-shaped requests
    answered as the base does."""
    pending = [
        (goal, key, form, EVERYDAY)
        for key, _, reason, goal in items
        if not reason and (form := form_of(goal, ctx.s.everyday_forms)) is not None
    ]
    return {key: r for (_, key, _, _), r in zip(pending, _in_forms(ctx, pending, benign=True), strict=True)}


def _benign_requests(ctx: Ctx, topics: list[dict], add, target: int) -> None:  # noqa: ANN001 - run_instructions.add
    """Benign-but-sensitive requests: the seeds, then harmless questions on each harmful topic ("How
    do I protect my home from burglars?": what an over-cautious model refuses), then, if still short,
    free self-instruct from the benign seeds. With synth.benign_goals (goals style) the per-topic ones
    are harmless goals in the harmful goals' request frames instead, so the frame tells nothing."""
    s, seeds = ctx.s, ctx.seeds
    n_benign = 0
    for text in seeds.benign:
        if n_benign < target and add(text, "benign", "benign", None, "seed", ("benign_seed", text)):
            n_benign += 1
    if topics and n_benign < target:
        goals = s.benign_goals and s.instruction_style == "goals"
        kind = "benign_goals" if goals else "benign_topic"
        demo = _demo(ctx, kind)

        def plan(domain: str, topic: dict, rnd: int) -> tuple[list[dict], GenParams]:
            d = seeds.domain(domain)
            prompt = render(kind, description=d.description, topic=topic["text"], n=PER_CALL)
            return list_call(ctx, prompt, ("benign-topic", topic["id"], rnd), demo)

        def take(domain: str, topic: dict, text: str, key: tuple) -> bool:
            nonlocal n_benign
            key = ("benign", *key)  # record ids apart from the harmful rounds' on the same topic
            if n_benign >= target:
                return False
            extra = {"area": domain}
            if goals:  # synth.benign_goals: a harmless goal in a harmful goal's request frame
                reason, goal = goal_reason(text)
                if reason:
                    ctx.reject("instructions", f"benign_{reason}", text, topic["id"], key)
                    return False
                text, extra["goal"] = as_request(goal, benign=True, more=s.more_frames), goal
            if not add(text, "benign", "benign", topic, "model", key, **extra):
                return False
            n_benign += 1
            return True

        quota = math.ceil((target - n_benign) / len(topics))
        # once the target is met, later topics would only ask for items `take` refuses: stop asking
        _topic_rounds(
            ctx, topics, take, quota, plan=plan, full=lambda: n_benign >= target, desc="instructions/benign"
        )
    generated: list[str] = []
    for rnd in range(s.max_attempts + 2 * math.ceil(max(target - n_benign, 0) / PER_CALL)):
        if n_benign >= target:
            break
        rng = random.Random(call_seed(s.seed, "benign-mix", rnd))
        examples = rng.sample(seeds.benign, min(3, len(seeds.benign))) + rng.sample(
            generated, min(1, len(generated))
        )
        prompt = render("benign", examples=numbered(examples), n=PER_CALL)
        for j, text in enumerate(ask_list(ctx, prompt, ("benign", rnd), "instructions/benign")):
            if n_benign >= target:
                break
            if add(text, "benign", "benign", None, "model", ("benign", rnd, j)):
                generated.append(text)
                n_benign += 1
