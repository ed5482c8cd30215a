"""Indirect-object identification (Wang et al. 2022): "When Mary and John went to the store, John gave a drink
to" -> " Mary" (the indirect object), distractor " John" (the subject).

The corruption is the ABC one: the subject's second mention is replaced by a third name ("..., Anna gave a drink
to"), so the sentence no longer says who the subject is and the model has no reason to prefer Mary over John.
Both orders of the first two names occur (ABBA and BABA). Names must be single tokens with their leading space;
the filter drops the rest (a multi-token third name shows as `length_mismatch`).
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register

NAMES = [
    "Mary", "John", "Alice", "Bob", "James", "Michael", "David", "Sarah", "Emma", "Daniel", "Laura", "Kevin",
    "Rachel", "Thomas", "Paul", "Mark", "Anna", "Lisa", "Peter", "Linda", "Susan", "Robert", "Karen", "Steven",
    "Brian", "Jessica", "Jennifer", "Andrew", "Nancy", "George", "Helen", "Edward", "Ruth", "Jason", "Amy",
    "Ryan", "Kate", "Jack", "Sam", "Tom", "Eric", "Adam", "Grace", "Rose", "Henry", "Emily", "Victoria",
    "Charles", "Frank", "Scott", "Justin", "Carl", "Sophie", "Julia", "Joseph", "Martin", "Alex", "Chris",
    "Patrick", "Simon", "Oliver", "Lucy", "Alan", "Diana", "Harry", "Jane", "Leo", "Max", "Nick", "Ben",
]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "library"]
OBJECTS = ["drink", "snack", "book", "ring", "key", "basketball", "necklace", "computer", "bottle", "letter"]
TEMPLATES = [
    "When {A} and {B} went to the {place}, {S} gave a {obj} to",
    "After {A} and {B} went to the {place}, {S} gave a {obj} to",
    "While {A} and {B} were working at the {place}, {S} gave a {obj} to",
    "When {A} and {B} got a {obj} at the {place}, {S} decided to give it to",
    "Friends {A} and {B} found a {obj} at the {place}. {S} gave it to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "After the lunch, {A} and {B} went to the {place}. {S} gave a {obj} to",
    "The {place} {A} and {B} went to had a {obj}. {S} gave it to",
]
N_CANDIDATES = 6000


@register
class IOI(TemplateCapability):
    name = "ioi"
    description = "When Mary and John went to the store, John gave a drink to -> Mary (corrupt: second John -> Anna)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        out = []
        for _ in range(N_CANDIDATES):
            io, s, c = rng.sample(NAMES, 3)
            first, second = (io, s) if rng.random() < 0.5 else (s, io)
            kw = dict(A=first, B=second, place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
            t = rng.choice(TEMPLATES)
            out.append(ProbePair(t.format(S=s, **kw), t.format(S=c, **kw), " " + io, " " + s))
        return out
