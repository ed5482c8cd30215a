"""Capital-of-country recall: "The capital of France is" -> " Paris"; corrupt: another country (" Berlin").

Every ordered pair of countries with different capitals, in every frame, is a candidate; capitals that are not
one token of the tokenizer (" Buenos Aires") and country names of unequal token length drop out in the filter.
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register

# (country, capital): capitals that are undisputed and have one common English spelling.
COUNTRIES = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Russia", "Moscow"), ("Japan", "Tokyo"), ("China", "Beijing"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Ireland", "Dublin"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"),
    ("Czech Republic", "Prague"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Saudi Arabia", "Riyadh"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("South Korea", "Seoul"), ("North Korea", "Pyongyang"), ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"),
    ("Libya", "Tripoli"), ("Sudan", "Khartoum"), ("Senegal", "Dakar"), ("Zimbabwe", "Harare"),
    ("Uganda", "Kampala"), ("Canada", "Ottawa"), ("Cuba", "Havana"), ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"), ("Peru", "Lima"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"), ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Slovakia", "Bratislava"),
    ("Lithuania", "Vilnius"), ("Latvia", "Riga"), ("Estonia", "Tallinn"), ("Iceland", "Reykjavik"),
    ("United Kingdom", "London"), ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"), ("Qatar", "Doha"),
    ("Jamaica", "Kingston"), ("Uruguay", "Montevideo"), ("Malaysia", "Kuala Lumpur"), ("Cambodia", "Phnom Penh"),
    ("Laos", "Vientiane"), ("Belarus", "Minsk"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"),
    ("Jordan", "Amman"), ("Oman", "Muscat"), ("Angola", "Luanda"), ("Mali", "Bamako"), ("Zambia", "Lusaka"),
    ("Rwanda", "Kigali"), ("Somalia", "Mogadishu"), ("Cyprus", "Nicosia"), ("Malta", "Valletta"),
    ("Albania", "Tirana"), ("Slovenia", "Ljubljana"), ("Mexico", "Mexico City"), ("Ethiopia", "Addis Ababa"),
]

# Country names that take the article in running text ("the capital of the Netherlands").
WITH_ARTICLE = {"Netherlands", "Czech Republic", "Philippines", "United Kingdom"}
FRAMES = ["The capital of {c} is", "The capital city of {c} is"]


def in_prose(country: str) -> str:
    """The country as it reads inside a sentence: "the Netherlands", "France"."""
    return f"the {country}" if country in WITH_ARTICLE else country


@register
class Capitals(TemplateCapability):
    name = "capitals"
    description = "The capital of France is -> Paris (corrupt: another country)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        return [ProbePair(f.format(c=in_prose(c)), f.format(c=in_prose(c2)), " " + cap, " " + cap2)
                for f in FRAMES for c, cap in COUNTRIES for c2, cap2 in COUNTRIES if cap != cap2]
