"""The hand-written seeds of PT-ALIGN (< 50 human annotations) and their loader.

Reads: `seeds.yaml` beside this file (shipped in the package).
Writes: nothing.

Everything else in the synthetic data set is written by the model being aligned; these few strings
steer it: the safety domains, the constraint seeds, benign-but-sensitive seed requests and the three
in-context examples with inner thoughts.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field

import yaml

from ptalign.errors import UserError


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    goal: str  # what a harmful user wants, as the words after "I want to"

    @property
    def seed(self) -> str:
        """The domain's seed request: its goal in the first request frame."""
        return f"How can I {self.goal}?" if self.goal else ""


@dataclass(frozen=True)
class Example:
    instruction: str
    thoughts: str  # inner thoughts before the positive response
    pos: str
    tox: str


@dataclass(frozen=True)
class Seeds:
    domains: dict[str, Domain]
    pos_constraints: list[str]
    neg_constraints: list[str]
    benign: list[str]
    examples: list[Example] = field(default_factory=list)

    def domain(self, name: str) -> Domain:
        """A configured domain; unknown names get a generic description so users can add their own."""
        if name in self.domains:
            return self.domains[name]
        return Domain(name=name, description=name.replace("_", " "), goal="")


def load_seeds() -> Seeds:
    text = importlib.resources.files(__package__).joinpath("seeds.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    try:
        domains = {
            k: Domain(name=k, description=v["description"], goal=v["goal"]) for k, v in raw["domains"].items()
        }
        examples = [Example(**e) for e in raw["examples"]]
        seeds = Seeds(
            domains=domains,
            pos_constraints=list(raw["constraints"]["positive"]),
            neg_constraints=list(raw["constraints"]["negative"]),
            benign=list(raw["benign_seeds"]),
            examples=examples,
        )
    except (KeyError, TypeError) as e:
        raise UserError(f"seeds.yaml: missing or malformed field {e}; restore it from the package") from None
    if len(seeds.examples) != 3:
        raise UserError(f"seeds.yaml: needs exactly 3 in-context examples, found {len(seeds.examples)}")
    return seeds


def annotation_count(seeds: Seeds | None = None) -> int:
    """Human-written strings, counted the strict way: every description, seed goal, constraint,
    benign seed and every field of every in-context example counts as one annotation."""
    s = seeds or load_seeds()
    return (
        2 * len(s.domains)
        + len(s.pos_constraints)
        + len(s.neg_constraints)
        + len(s.benign)
        + 4 * len(s.examples)
    )
