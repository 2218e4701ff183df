"""Benchmark sets made unlike `broaden demo-data`: defaults are chosen on several, checked on one.

Each recipe is made differently: other speech engines (flite, festival, espeak-ng) perturbed per
item (tempo, pitch, noise, rooms, hum, clipping, dropped packets, sample rates from 8 to 44.1 kHz,
mono or stereo, WAV, FLAC, Ogg Vorbis or MP3), other media (no image, no text, drawn scenes, crops
of real photos, usage charts, X-ray scans in JPEG; plain text, form fields or HTML), other label
configs (names, object tags, three- to seven-way and multiple-choice controls) and other rare
classes with sub-types and benign look-alikes. Every set is written in the format `broaden
simulate` reads: manifest.jsonl, label_config.xml and tasks.json for Label Studio, media paths
relative to the folder. Test items draw their sentences from parts of their own, so no test
wording occurs in the pool. `parcels` is the held-out set: no default is chosen on it
(Recipe.held_out). `reviews`, `calls` and `meters` were held out until each informed a choice
once (BENCHMARKS.md).

    python -m backend.lab.suite --recipe podcast --out sets/podcast --items 400 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import itertools
import json
import logging
import shutil
import string
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from backend.errors import BroadenError
from backend.lab.demo import (
    FASHION_MNIST_DIR,
    DemoDataError,
    available_voices,
    label_config,
    load_fashion_mnist,
    render_image,
)
from backend.labelstudio.labelconfig import parse_label_config

log = logging.getLogger(__name__)

TEST_FRACTION = 0.25
MIN_RARE_PER_SPLIT = 2  # a rare label has at least this many items in each split, whatever its rate
MIN_ITEMS = 16  # the smallest set whose test split still holds the rare items and some others
MAX_CLIP_S = 9.0  # a longer take is sped up to fit: the encoders read about 12 s of audio
TEMPO = (0.85, 1.2)  # speech perturbations drawn per item
PITCH_CENTS = 300
SNR_DB = (10.0, 30.0)
RATES = (8000, 16000, 22050, 44100)  # the sample rate a WAV is written at, drawn per item
# The Debian package that brings each command (the festival voice is its own package).
PACKAGES = {"flite": "flite", "text2wave": "festival festvox-kallpc16k", "sox": "sox", "espeak-ng": "espeak-ng"}
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
FESTIVAL_VOICE = "kal_diphone"


# ---------------------------------------------------------------------------------------------
# Shared plumbing: wordings, the plan of splits and labels, speech, perturbation, files.


@cache
def wordings(recipe: str, split: str, kind: str, role: str) -> tuple[str, ...]:
    """Every sentence one split's parts make for a role ("speech" or "text" kind): opener +
    template + closer, each slot ({name}) filled with every value the split has for it."""
    parts, fill = PHRASES[recipe][split][kind], PHRASES[recipe][split]["fill"]
    out = []
    for pieces in itertools.product(parts["opener"], parts[role], parts["closer"]):
        text = "".join(pieces)
        slots = list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(text) if f))
        for values in itertools.product(*(fill[s] for s in slots)):
            filled = text.format(**dict(zip(slots, values, strict=True)))
            out.append(filled[0].upper() + filled[1:])
    return tuple(out)


def _slots(rng: np.random.Generator, recipe: str, split: str) -> dict[str, str]:
    """One value per slot for an item, so that its text and its speech talk about the same things."""
    return {slot: str(rng.choice(values)) for slot, values in PHRASES[recipe][split]["fill"].items()}


def _say(rng: np.random.Generator, recipe: str, split: str, kind: str, role: str, slots: dict[str, str]) -> str:
    """One of wordings(recipe, split, kind, role), with the item's slot values."""
    parts = PHRASES[recipe][split][kind]
    text = "".join(str(rng.choice(parts[p])) for p in ("opener", role, "closer")).format(**slots)
    return text[0].upper() + text[1:]


def _plan(
    job: Job, rates: dict[str, float | None], rare: tuple[str, ...], audio_share: dict[str, float]
) -> list[dict[str, Any]]:
    """Split, label and whether only the audio tells, per item. Labels other than the default
    (the first of rates with rate None) get their rate in each split, the rare ones at least
    MIN_RARE_PER_SPLIT; within each split and label, the given share is decided by audio alone.
    A test-only job puts every item in the test split."""
    rng, n_items = job.rng, job.n_items
    n_test = n_items if job.test_only else max(MIN_ITEMS // 4, round(n_items * TEST_FRACTION))
    splits = rng.permutation(["test"] * n_test + ["pool"] * (n_items - n_test))
    default = next(label for label, rate in rates.items() if rate is None)
    plan = [{"split": str(s), "label": default, "audio_only": False} for s in splits]
    for split in ("pool", "test"):
        free = [int(i) for i in rng.permutation(np.flatnonzero(splits == split))]
        if not (size := len(free)):
            continue
        for label, rate in rates.items():
            if rate is None:
                continue
            k = max(MIN_RARE_PER_SPLIT, round(size * rate)) if label in rare else round(size * rate)
            for i in free[:k]:
                plan[i]["label"] = label
            free = free[k:]
        for label in rates:
            members = [i for i in rng.permutation(np.flatnonzero(splits == split)) if plan[i]["label"] == label]
            share = audio_share.get(label, 0.0)
            k = round(len(members) * share) or (1 if share and len(members) > 1 else 0)
            for i in members[:k]:
                plan[i]["audio_only"] = True
    return plan


def _need(tools: tuple[str, ...]) -> None:
    if missing := [t for t in tools if shutil.which(t) is None]:
        packages = " ".join(dict.fromkeys(PACKAGES[t] for t in missing))
        raise DemoDataError(f"{', '.join(missing)} not found on PATH; install with: sudo apt-get install {packages}")


def flite_voices() -> list[str]:
    """The wanted flite voices this flite has (`flite -lv`)."""
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout.split()
    if not (voices := [v for v in FLITE_VOICES if v in listed]):
        raise DemoDataError(f"flite has none of the voices {', '.join(FLITE_VOICES)}")
    return [f"flite:{v}" for v in voices]


def _synthesize(voice: str, text: str, path: Path, rng: np.random.Generator) -> None:
    """One take of text by "engine:voice" into a WAV at path, at the engine's own rate."""
    engine, _, name = voice.partition(":")
    if engine == "flite":
        cmd = ["flite", "-voice", name, "-t", text, "-o", str(path)]
    elif engine == "festival":
        path.with_suffix(".txt").write_text(text)
        cmd = ["text2wave", "-eval", f"(voice_{name})", "-o", str(path), str(path.with_suffix(".txt"))]
    else:
        speed, pitch = int(rng.integers(140, 186)), int(rng.integers(25, 76))
        cmd = ["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch), "-w", str(path), text]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode or not path.is_file() or path.stat().st_size < 100:
        why = (done.stderr.strip().splitlines() or ["no audio written"])[-1]
        hint = " (the festival voice comes with festvox-kallpc16k)" if engine == "festival" else ""
        raise DemoDataError(f"{engine} failed on {text!r}: {why}{hint}")


def speech_wave(
    voice: str,
    text: str,
    rate: int,
    rng: np.random.Generator,
    telephone: bool = False,
    tempo: tuple[float, float] = TEMPO,
    cents: float = PITCH_CENTS,
    extra: tuple[str, ...] = (),
    max_s: float = MAX_CLIP_S,
) -> np.ndarray:
    """text spoken by voice, shifted in pitch, changed in tempo (sped up further if it would run
    over max_s) and resampled to rate by sox; telephone: band-limited to 300-3400 Hz; extra:
    more sox effects (a room, a filter) before the resampling."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        _synthesize(voice, text, raw, rng)
        factor = max(rng.uniform(*tempo), sf.info(raw).duration / max_s)
        effects = ["pitch", f"{rng.uniform(-cents, cents):.0f}", "tempo", "-s", f"{factor:.3f}"]
        effects += (["sinc", "300-3400"] if telephone else []) + list(extra)
        cmd = ["sox", "-V1", "-D", str(raw), "-e", "floating-point", "-b", "32", str(out), *effects, "rate", str(rate)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise DemoDataError(f"sox failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        wave, _ = sf.read(out, dtype="float32", always_2d=True)
    return wave.mean(axis=1)


def noisy(wave: np.ndarray, rate: int, rng: np.random.Generator, snr_db: tuple[float, float] = SNR_DB) -> np.ndarray:
    """Padded with a little silence, with white or rumbling noise at an SNR drawn from snr_db."""
    pad = [np.zeros(int(rng.uniform(0.05, 0.5) * rate), np.float32) for _ in range(2)]
    wave = np.concatenate([pad[0], wave, pad[1]])
    noise = rng.standard_normal(len(wave))
    if rng.random() < 0.5:  # rumble: a random walk less its slow drift
        noise = np.cumsum(noise) - np.convolve(np.cumsum(noise), np.ones(64) / 64, mode="same")
    power = np.mean(wave**2) / 10 ** (rng.uniform(*snr_db) / 10)
    return wave + noise * np.sqrt(power / max(np.mean(noise**2), 1e-12))


def save_audio(
    wave: np.ndarray, rate: int, path: Path, rng: np.random.Generator, snr_db: tuple[float, float] = SNR_DB
) -> None:
    """noisy(wave), at a random level, written as 16-bit PCM at rate."""
    wave = noisy(wave, rate, rng, snr_db)
    wave *= rng.uniform(0.3, 0.9) / max(np.abs(wave).max(), 1e-6)
    sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")


# ---------------------------------------------------------------------------------------------
# Phrases. Per recipe and split: slot values ("fill"), then per kind (speech, text) openers,
# closers and templates per role. Test parts share no template and no slot value with the pool.

# fmt: off
PHRASES: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {
    "podcast": {
        "pool": {
            "fill": {
                "topic": ["sourdough baking", "marathon training", "learning the cello", "fixing old bikes",
                          "growing tomatoes on a balcony", "moving to a new city"],
                "brand": ["Northwind Coffee", "Bramble meal kits", "Halcyon mattresses", "Ledger Lane notebooks"],
                "pct": ["fifteen", "twenty", "thirty"],
                "coin": ["bitcoin", "a new token called Moonrock", "ether"],
                "casino": ["Lucky Harbor casino", "SpinCity bets"],
                "remedy": ["colloidal silver", "a turmeric detox", "raw garlic water"],
                "illness": ["diabetes", "asthma", "high blood pressure"],
                "num": ["12", "27", "43", "58", "61", "74"],
            },
            "speech": {
                "opener": ["", "Okay, ", "So listen, ", "Right, "],
                "closer": [".", ", honestly.", ", trust me.", ", anyway."],
                "clean": ["today we talk about {topic} with a guest who loves it",
                          "{topic} turned out to be harder than I expected",
                          "I spent the whole weekend on {topic}",
                          "a listener wrote in about {topic}"],
                "ad": ["this episode is brought to you by {brand}, use code SHOW for {pct} percent off",
                       "{brand} sponsors today's show and listeners get {pct} percent off",
                       "a quick word from our sponsor, {brand}"],
                "unsafe:scam": ["send {coin} to the wallet in the show notes and I will double it",
                                "my private group pays {pct} percent a week on {coin}, put your savings in"],
                "unsafe:gambling": ["put your rent money on {casino}, my code gives you a free first bet",
                                    "borrow if you have to, {casino} pays out every night"],
                "unsafe:health": ["throw away your inhaler and take {remedy} instead",
                                  "{remedy} cures {illness}, your doctor will never tell you that"],
                "lookalike": ["here is how to spot a {coin} scam before it costs you",
                              "never send gift cards to strangers, no real company asks for them",
                              "our guest explains why {remedy} does not cure {illness}",
                              "we talk about gambling debts and where to find help"],
            },
            "text": {
                "opener": ["", "New episode. "],
                "closer": ["", " Listen now.", " Show notes inside."],
                "neutral": ["Episode {num}: catching up after a long week.",
                            "Episode {num}: listener questions and stories from the road.",
                            "Episode {num} of our weekly chat."],
                "clean": ["We dig into {topic}.", "All about {topic}, with a guest."],
                "ad": ["Includes a sponsor message from {brand}.", "Sponsored by {brand}, with a listener discount."],
                "unsafe:scam": ["The host's private {coin} group that pays out every week."],
                "unsafe:gambling": ["Big wins at {casino}, plus the host's betting code."],
                "unsafe:health": ["Why {remedy} beats medicine for {illness}."],
                "lookalike": ["Consumer advice: spotting fraud and false health claims."],
            },
        },
        "test": {
            "fill": {
                "topic": ["restoring a sailboat", "night photography", "home brewing", "learning Japanese"],
                "brand": ["Kestrel razors", "Oakmoss tea", "Fieldnote backpacks"],
                "pct": ["ten", "twenty five"],
                "coin": ["dogecoin", "a coin called SolarFlare", "litecoin"],
                "casino": ["Golden Reef slots", "BetRocket"],
                "remedy": ["apricot kernels", "a bleach cleanse", "ozone drops"],
                "illness": ["cancer", "epilepsy", "heart disease"],
                "num": ["5", "19", "33", "88"],
            },
            "speech": {
                "opener": ["", "Look, ", "Now, "],
                "closer": [".", ", seriously.", ", that's all."],
                "clean": ["my guest this week has spent ten years on {topic}",
                          "we finally tried {topic} and it went fine",
                          "here is what nobody tells you about {topic}"],
                "ad": ["support for the show comes from {brand}, get {pct} percent off with our link",
                       "before we go on, {brand} is giving our listeners {pct} percent off"],
                "unsafe:scam": ["wire your money into {coin} through my link and it triples by Friday",
                                "give me your bank login and I will set up your {coin} account for you"],
                "unsafe:gambling": ["sell your car and go all in at {casino}, you cannot lose",
                                    "kids can sign up at {casino} too, just use my code"],
                "unsafe:health": ["{remedy} will cure {illness}, skip the chemo",
                                  "stop your seizure pills and try {remedy} for a month"],
                "lookalike": ["a reporter tells us how she exposed a {coin} fraud ring",
                              "if someone asks you to wire money for a prize, hang up",
                              "the evidence says {remedy} does nothing for {illness}",
                              "our guest quit betting at {casino} and tells her story"],
            },
            "text": {
                "opener": ["", "Out now. "],
                "closer": ["", " Enjoy."],
                "neutral": ["Show {num}: a relaxed conversation.", "Show {num}: odds and ends from the mailbag."],
                "clean": ["This week: {topic}.", "A long talk about {topic}."],
                "ad": ["With thanks to our sponsor {brand}.", "Brought to you by {brand}."],
                "unsafe:scam": ["How {coin} can triple your savings by Friday."],
                "unsafe:gambling": ["Why you should go all in at {casino}."],
                "unsafe:health": ["The {remedy} secret for {illness}."],
                "lookalike": ["Fraud, betting and fake cures: how to protect yourself."],
            },
        },
    },
    "clips": {
        "pool": {
            "fill": {
                "place": ["kitchen", "east wing", "car park", "basement", "lobby"],
                "time": ["ten past six", "half past eight", "noon"],
                "name": ["Maria", "Tom", "Priya", "Jonas"],
                "day": ["Tuesday", "Friday"],
            },
            "speech": {
                "opener": ["", "Hey, ", "Okay everyone, "],
                "closer": [".", ", thanks.", ", okay?"],
                "speech": ["the bus to the station leaves at {time}", "{name}, dinner is ready in the {place}",
                           "did anyone see my keys in the {place}", "the meeting moved to {time}"],
                "alert:fire": ["there is a fire in the {place}, leave the building now",
                               "smoke in the {place}, everybody get out"],
                "alert:flood": ["water is pouring into the {place}, move upstairs now"],
                "alert:intruder": ["someone broke into the {place}, lock your doors and call the police"],
                "lookalike": ["the fire drill on {day} is only a test, no need to leave",
                              "the flood warning for the {place} has been lifted",
                              "{name} bought a new smoke detector for the {place}",
                              "the police officer at the {place} was very friendly"],
            },
        },
        "test": {
            "fill": {
                "place": ["garage", "west stairwell", "loading dock", "nursery"],
                "time": ["quarter to nine", "seven sharp"],
                "name": ["Ahmed", "Lena", "Grace"],
                "day": ["Monday", "Sunday"],
            },
            "speech": {
                "opener": ["", "Listen up, ", "Attention, "],
                "closer": [".", ", please.", ", right away."],
                "speech": ["{name} is picking up the kids at {time}", "lunch is served in the {place}",
                           "the printer in the {place} works again"],
                "alert:fire": ["flames in the {place}, get out and stay out"],
                "alert:flood": ["the {place} is under water, evacuate to the roof"],
                "alert:intruder": ["an armed man is in the {place}, hide and stay silent",
                                   "there is an intruder near the {place}, stay away from the windows"],
                "lookalike": ["{name} practised the evacuation route on {day}, it went well",
                              "the {place} got new fire extinguishers on {day}",
                              "we watched a film about a flood on {day}"],
            },
        },
    },
    "reviews": {
        "pool": {
            "fill": {
                "product": ["kettle", "desk lamp", "phone case", "blender", "backpack", "rice cooker"],
                "person": ["mum", "flatmate", "son"],
                "street": ["14 Elm Road", "2 Harbour Street"],
                "site": ["easyreviewcash dot com", "stars4pay dot net"],
            },
            "text": {
                "opener": ["Bought this for my {person}. ", "Ordered the {product} last month. ", ""],
                "closer": ["", " Would buy again.", " Three stars."],
                "keep": ["The {product} works well and was easy to set up.",
                         "Arrived on time, the {product} looks like the photos.",
                         "Decent {product} for the price, a bit noisy."],
                "flag": ["The {product} got very hot and the plug started to smoke.",
                         "The {product} gave my {person} an electric shock."],
                "lookalike": ["This {product} is a killer deal, it destroys the competition.",
                              "Customer service called me back and sorted it out, five stars.",
                              "Do not believe the fake reviews, this {product} is genuinely good."],
                "remove:threat": ["The seller should watch his back, I know where the warehouse is."],
                "remove:personal_data": ["The owner lives at {street}, go and complain to him yourself."],
                "remove:spam": ["Get paid for reviews like this one at {site}."],
            },
            "speech": {
                "opener": ["", "Um, ", "So, "],
                "closer": [".", ", yeah.", ", that's it."],
                "remark": ["I recorded this after a week with the {product}",
                           "just adding a voice note to my review",
                           "my {person} uses the {product} every day"],
                "lookalike": ["I would kill for a quieter {product}, but fine",
                              "never post your home address in a review, people",
                              "ignore anyone who pays for reviews, this one is honest"],
                "remove:threat": ["I am going to find that seller and hurt him",
                                  "the delivery driver will regret this, I know his van",
                                  "if the {product} breaks again I will come for the seller"],
                "remove:personal_data": ["the seller lives at {street}, go and knock on his door",
                                         "the seller's {person} lives at {street}, ask them about the {product}"],
                "remove:spam": ["want free stuff, go to {site} and write five star reviews for cash",
                                "I got this {product} free from {site}, they pay for every review"],
            },
        },
        "test": {
            "fill": {
                "product": ["toaster", "hair dryer", "yoga mat", "power bank"],
                "person": ["dad", "partner"],
                "street": ["7 Mill Lane", "31 Quay Road"],
                "site": ["reviewbucks dot org", "paidstars dot shop"],
            },
            "text": {
                "opener": ["Got the {product} as a gift. ", "Second {product} I have owned. "],
                "closer": ["", " Recommended."],
                "keep": ["Does the job, the {product} feels solid.", "Good value, my {person} likes the {product}."],
                "flag": ["The {product} caught fire on the second day."],
                "lookalike": ["The {product} is so good it should be illegal.",
                              "The phone number on the box reached a real person, impressive."],
                "remove:threat": ["Whoever packed this should be beaten, I will find you."],
                "remove:personal_data": ["Here is the manager's home address, {street}, pay him a visit."],
                "remove:spam": ["Earn money writing reviews, sign up at {site} today."],
            },
            "speech": {
                "opener": ["", "Okay, ", "Hi, "],
                "closer": [".", ", bye.", ", thanks."],
                "remark": ["quick voice note about the {product}", "my {person} asked me to record this"],
                "lookalike": ["the {product} absolutely murders the old one, in a good way",
                              "never give out your address to a seller, stay safe"],
                "remove:threat": ["whoever runs this shop, I will burn it down",
                                  "tell the seller I will be waiting outside his house",
                                  "one more broken {product} and someone gets hurt"],
                "remove:personal_data": ["the owner's address is {street}, his phone is on the receipt",
                                         "the manager of the {product} shop lives at {street}"],
                "remove:spam": ["five star reviews for cash, sign up at {site}",
                                "{site} paid me for this review of the {product}, you can join too"],
            },
        },
    },
    "calls": {
        "pool": {
            "fill": {
                "plan": ["Fibre 100", "the family bundle", "Mobile Basic"],
                "amount": ["forty two pounds", "ninety pounds", "sixty five pounds"],
                "town": ["Leeds", "Bristol", "Norwich"],
                "month": ["March", "June", "October"],
                "device": ["router", "set top box"],
                "ref": ["4471", "8802", "1290", "5530"],
            },
            "text": {
                "opener": ["", "Call log: "],
                "closer": ["", " (ref {ref})"],
                "neutral": ["Inbound call", "Customer called the helpline", "Call transferred from the main line"],
                "billing": ["Billing query, {amount} on the last bill", "Charged twice in {month}"],
                "outage": ["No service, {device} offline", "Connection keeps dropping"],
                "move": ["Moving house to {town} in {month}", "Service transfer to a new address"],
                "upgrade": ["Wants to upgrade to {plan}", "Asking about faster plans than {plan}"],
            },
            "speech": {
                "opener": ["", "Hi, ", "Hello, yes, ", "Right, so "],
                "closer": [".", ", thanks.", ", please."],
                "billing": ["my bill went up to {amount} this month and I do not know why",
                            "I was charged twice for {plan} in {month}"],
                "outage": ["my {device} has had no signal since yesterday",
                           "the internet drops out every evening around eight"],
                "move": ["I am moving to {town} in {month} and want to keep {plan}",
                         "we need the line moved to our new flat in {town}"],
                "upgrade": ["I would like to go up to {plan}", "is there anything faster than {plan}"],
                "supervisor": ["this is the fourth time I have called, put me through to your manager",
                               "I am sick of this, I want to speak to someone senior right now"],
                "security:takeover": ["someone changed my password and ordered two phones on my account",
                                      "I got emails about a new login I never made, and {amount} of orders"],
                "security:sim_swap": ["my phone lost signal and the shop says my number moved to a new SIM",
                                      "somebody ported my number to another SIM card without asking me"],
                "security:impersonation": ["I am calling for my neighbour, just give me her account password",
                                           "I am the account holder's husband, read me the card number on file"],
                "lookalike": ["how do I turn on two step login for my account",
                              "I had a text about a new SIM, is that really from you",
                              "can you make sure nobody else can change my password"],
            },
            "agent": {
                "opener": ["", "Okay, ", "Thanks for waiting, "],
                "closer": [".", ", anything else today?"],
                "routine": ["I have updated that on your account", "that is all sorted for you now",
                            "I have booked that in for {month}"],
                "security:takeover": ["I am locking the account and passing the new orders to our fraud team",
                                      "these logins were not you, so I am freezing the account"],
                "security:sim_swap": ["the SIM change was not authorised, I am sending this to security",
                                      "I am reversing the SIM swap and raising a fraud case"],
                "security:impersonation": ["the caller failed the security questions, I am flagging the account",
                                           "this person is not on the account, I am reporting the attempt"],
                "lookalike": ["for your security this call may be recorded",
                              "remember we will never ask for your full password",
                              "I have sent a security code to your phone to confirm it is you"],
            },
        },
        "test": {
            "fill": {
                "plan": ["Fibre 500", "Unlimited Plus"],
                "amount": ["thirty pounds", "a hundred and ten pounds"],
                "town": ["Glasgow", "Exeter"],
                "month": ["January", "August"],
                "device": ["modem", "landline"],
                "ref": ["3318", "7064"],
            },
            "text": {
                "opener": ["", "Note: "],
                "closer": ["", " - priority normal"],
                "neutral": ["Incoming call, no notes", "Caller on hold then connected"],
                "billing": ["Disputes a charge of {amount}", "Question about the {month} invoice"],
                "outage": ["{device} not working since the storm", "Slow and unstable connection"],
                "move": ["Relocating to {town}", "New address from {month}"],
                "upgrade": ["Interested in {plan}", "Wants more data, maybe {plan}"],
            },
            "speech": {
                "opener": ["", "Yeah hi, ", "Good morning, "],
                "closer": [".", ", cheers.", ", if you could."],
                "billing": ["there is a charge of {amount} I never agreed to",
                            "my {month} invoice is wrong"],
                "outage": ["the {device} stopped working after the storm", "everything is really slow today"],
                "move": ["we are relocating to {town} and need the service there", "I move to {town} in {month}"],
                "upgrade": ["I want more data, maybe {plan}", "what would {plan} cost me"],
                "supervisor": ["no, I am done with you, get me your supervisor",
                               "I have been on hold an hour, I want a complaint and a manager"],
                "security:takeover": ["my account email was changed and I can't log in, there are orders I didn't make",
                                      "someone is using my account, they bought a tablet for {amount}"],
                "security:sim_swap": ["my number suddenly works on somebody else's phone",
                                      "you moved my number to a SIM I never asked for"],
                "security:impersonation": ["my mother can't come to the phone, just tell me her PIN",
                                           "I'm her son, change the address on her account to mine"],
                "lookalike": ["what should I do if I get a suspicious call pretending to be you",
                              "can I add a PIN to my account for extra safety"],
            },
            "agent": {
                "opener": ["", "Alright, ", "Got it, "],
                "closer": [".", ", have a good day."],
                "routine": ["your request is done and you will get an email", "that change is live from {month}"],
                "security:takeover": ["I have blocked the unknown device and opened a fraud investigation",
                                      "the account is suspended while security reviews the orders"],
                "security:sim_swap": ["that port request was fraudulent, security will call you back",
                                      "I have cancelled the new SIM and reported it as fraud"],
                "security:impersonation": ["I cannot verify you, I am noting a suspected impersonation",
                                           "the caller is not authorised, I have alerted our security desk"],
                "lookalike": ["as a reminder, we never ask for your PIN by text",
                              "I just need to run a quick security check first"],
            },
        },
    },
    "meters": {
        "pool": {
            "fill": {
                "meter": ["gas meter", "electric meter", "smart meter", "prepayment meter"],
                "place": ["under the stairs", "in the garage", "in the outside box", "in the cellar"],
                "amount": ["two hundred pounds", "ninety pounds", "three hundred and forty pounds"],
                "obstacle": ["a locked gate", "a barking dog", "nobody at home", "a blocked cupboard"],
                "name": ["Mrs Okafor", "Mr Byrne", "the tenant", "the landlord"],
            },
            "text": {
                "opener": ["", "Notes: ", "Reader's note: "],
                "closer": ["", " Photo on file.", " Done."],
                "neutral": ["Visit logged, details in the voice memo.", "See the attached memo for this one."],
                "file": ["Read the {meter} {place}, nothing unusual.",
                         "{meter} read, display clear, {name} was helpful.",
                         "Normal reading from the {meter} {place}."],
                "reread": ["No access because of {obstacle}, needs another visit.",
                           "Could not reach the {meter} {place}, {obstacle}."],
                "bill": ["{name} disputes a bill of {amount} and asks for a refund.",
                         "{name} says the {amount} bill was estimated and wants it checked."],
                "tamper:bypass": ["Cables run round the {meter}, looks bypassed.",
                                  "Extra wiring {place} skips the {meter} altogether."],
                "tamper:magnet": ["Strong magnet stuck to the side of the {meter}.",
                                  "{name} had a magnet on the {meter} to slow the dial."],
                "tamper:seal": ["Seal on the {meter} broken and the cover forced.",
                                "The {meter} seal has been cut and glued back."],
                "safety:gas": ["Strong smell of gas {place}, called the emergency line.",
                               "Hissing from the pipe by the {meter}, suspected gas escape."],
                "safety:scorch": ["Scorch marks and a burning smell at the {meter}.",
                                  "Melted cable tails {place}, live parts showing."],
                "safety:co": ["{name} has headaches and the boiler flue is sooty, carbon monoxide risk.",
                              "Carbon monoxide alarm sounding {place} when I arrived."],
                "lookalike": ["New seal fitted after the {meter} was exchanged.",
                              "{name} asked how to spot a gas leak, left the leaflet.",
                              "Magnetic key fob on the cupboard door, reading clear.",
                              "Electrician tidied the cables {place} last week, certificate seen."],
            },
            "speech": {
                "opener": ["", "Right, ", "Memo, ", "Okay so "],
                "closer": [".", ", over.", ", that's it."],
                "remark": ["next stop after this one is across the road", "note to self, parking here is a nightmare",
                           "{name} offered me a cup of tea"],
                "file": ["all normal with the {meter} {place}", "reading taken, nothing to report"],
                "reread": ["could not get to the {meter}, {obstacle}",
                           "no access today because of {obstacle}, book a revisit"],
                "bill": ["{name} is unhappy about a bill of {amount} and wants money back",
                         "{name} thinks the {amount} bill is wrong"],
                "tamper:bypass": ["someone has wired round the {meter}, it is bypassed",
                                  "there is a cable going straight past the {meter}"],
                "tamper:magnet": ["there is a big magnet on the {meter} to slow it down",
                                  "{name} hid a magnet behind the {meter}"],
                "tamper:seal": ["the seal on the {meter} has been cut and stuck back",
                                "the {meter} cover has been forced open"],
                "safety:gas": ["I can smell gas {place}, I have called the emergency line",
                               "there is a gas leak {place}, get someone out today"],
                "safety:scorch": ["the {meter} is scorched and smells like burning plastic",
                                  "melted cables {place}, this needs an electrician now"],
                "safety:co": ["the carbon monoxide alarm was going off when I arrived",
                              "{name} feels dizzy and the flue is blocked, possible carbon monoxide"],
                "lookalike": ["just fitted a new seal after swapping the {meter}, all above board",
                              "gave {name} the gas safety leaflet, no smell anywhere",
                              "the fridge magnets on the cupboard door made me laugh",
                              "the old scorch mark {place} was fixed years ago, all fine now"],
            },
        },
        "test": {
            "fill": {
                "meter": ["economy seven meter", "dial meter", "token meter"],
                "place": ["behind the front door", "in the shed", "by the back porch"],
                "amount": ["a hundred and sixty pounds", "five hundred pounds"],
                "obstacle": ["an angry goose", "scaffolding", "a padlocked box"],
                "name": ["Miss Kowalski", "Dr Mensah", "the lodger"],
            },
            "text": {
                "opener": ["", "Remarks: ", "Field note: "],
                "closer": ["", " Logged.", " See photo."],
                "neutral": ["Memo recorded on site, no typed notes.", "Details by voice memo only."],
                "file": ["{meter} reading fine, {name} present.", "Routine read {place}, all in order."],
                "reread": ["Visit failed, {obstacle}, rebook.", "{meter} unreachable {place} due to {obstacle}."],
                "bill": ["Complaint about {amount} on the last statement, refund requested.",
                         "{name} queries a charge of {amount}."],
                "tamper:bypass": ["Jumper leads fitted across the {meter} terminals.",
                                  "Supply taken from before the {meter}, not recorded."],
                "tamper:magnet": ["Neodymium block found on top of the {meter}.",
                                  "Register stopped while a magnet sat on the {meter}."],
                "tamper:seal": ["Security tag missing and screws scratched on the {meter}.",
                                "Tamper tape on the {meter} torn, case prised open."],
                "safety:gas": ["Gas odour {place}, supply isolated at the valve.",
                               "Escape of gas reported, engineer called out."],
                "safety:scorch": ["Cut-out hot to touch and blackened by the {meter}.",
                                  "Smoke coming from the fuse {place}."],
                "safety:co": ["Yellow flames and soot on the cooker, {name} feels sick.",
                              "CO detector beeping {place}, family sent outside."],
                "lookalike": ["{name} wants a carbon monoxide alarm fitted, none there yet.",
                              "Old tamper tape replaced during the {meter} upgrade.",
                              "Fridge covered in magnets, unrelated to the {meter}."],
            },
            "speech": {
                "opener": ["", "So, ", "Note, "],
                "closer": [".", ", cheers.", ", moving on."],
                "remark": ["lovely weather for it today", "the van needs fuel before the next job"],
                "file": ["{meter} looks healthy, nothing odd", "read it {place}, everything in order"],
                "reread": ["{obstacle} stopped me getting in, try again next week",
                           "could not read the {meter}, {obstacle} in the way"],
                "bill": ["{name} says the bill of {amount} cannot be right",
                         "{name} asked for a refund on {amount}"],
                "tamper:bypass": ["the {meter} has jump leads across it, nothing is being counted",
                                  "they are taking power before the {meter}"],
                "tamper:magnet": ["found a magnet clamped onto the {meter}",
                                  "the {meter} stops turning when that magnet is on it"],
                "tamper:seal": ["the tamper tape on the {meter} is ripped",
                                "somebody has opened the {meter} case and the tag is gone"],
                "safety:gas": ["strong gas smell {place}, I turned it off at the valve",
                               "gas escaping {place}, the emergency engineer is on the way"],
                "safety:scorch": ["smoke from the fuse {place}, it is too hot to touch",
                                  "the cut-out by the {meter} is black and burnt"],
                "safety:co": ["the CO detector {place} keeps beeping, I got everyone out",
                              "soot all over the cooker and {name} feels sick, could be carbon monoxide"],
                "lookalike": ["{name} asked me where to buy a carbon monoxide detector",
                              "replaced the old tamper tape as part of the {meter} upgrade",
                              "someone's fridge magnets fell off when I opened the door"],
            },
        },
    },
    "parcels": {
        "pool": {
            "fill": {
                "name": ["my nephew", "my sister", "a customer", "my old neighbour"],
                "town": ["Lisbon", "Gdansk", "Cork", "Lyon"],
                "vague": ["personal effects", "gift", "household items"],
                "device": ["an old tablet", "a games console", "a mobile phone"],
                "cells": ["AA batteries", "button cells", "spare AAA batteries"],
                "liquid": ["olive oil", "shampoo", "maple syrup"],
                "metal": ["a socket set", "a cast iron pan", "bike parts"],
                "textile": ["jumpers", "a wool coat", "baby clothes"],
                "paper": ["novels", "school books", "old letters"],
                "food": ["biscuits", "dates", "dried mushrooms"],
                "battery": ["spare vape batteries", "loose lithium cells", "an e-bike battery"],
                "fuel": ["lighter fluid", "paint thinner", "a bottle of white spirit"],
                "canister": ["a camping gas canister", "spray paint cans", "a fire extinguisher"],
                "blade": ["a hunting knife", "a machete", "a flick knife"],
            },
            "text": {
                "opener": ["", "NB ", "Please note: "],
                "closer": ["", " Thanks.", " Fragile."],
                "neutral": ["Nothing further.", "No remarks.", "Packed by the sender."],
                "ship": ["Birthday present for {name} in {town}.", "Sending a few things on to {town}.",
                         "Handle with care please."],
                "invoice": ["Sold online to a buyer in {town}, invoice not attached.",
                            "Commercial samples for {name}, invoice to follow."],
                "address": ["House number unknown, {name} will collect.",
                            "{name} moved within {town}, new flat number to follow."],
                "dg:lithium": ["Also {battery} for {name}, packed loose.", "Includes {battery}, taped in a sock."],
                "dg:flammable": ["Also {fuel} for the workshop.", "{fuel} wrapped in a towel so it won't leak."],
                "dg:pressurised": ["Includes {canister} for {name}.", "{canister} at the bottom, wrapped up."],
                "dg:blade": ["Also {blade}, wrapped in newspaper.", "{name} asked for {blade}, it is in the box."],
                "lookalike": ["Battery charger only, no batteries inside.", "Knife block without the knives.",
                              "Empty perfume bottles for a collector.", "Bicycle pump and a puncture kit."],
            },
            "speech": {
                "opener": ["", "Hi, ", "Hello, yes, ", "Right, "],
                "closer": [".", ", thanks.", ", cheers, bye."],
                "remark": ["I would like a pickup tomorrow morning", "it is the usual address for collection",
                           "can the driver ring the bell twice"],
                "ship": ["it is a birthday present for {name} in {town}",
                         "just a few things for {name}, nothing special"],
                "invoice": ["it is stock I sold online, I have no invoice for it",
                            "these are samples for {name}, the invoice comes later"],
                "address": ["I do not know the house number, {name} will pick it up",
                            "{name} just moved in {town}, I am not sure of the flat"],
                "dg:lithium": ["I put {battery} in there for {name}, it is not on the form",
                               "I packed {battery} loose in the box, is that fine"],
                "dg:flammable": ["I tucked {fuel} in with the clothes", "there is {fuel} in there, I wrapped it well"],
                "dg:pressurised": ["I put {canister} at the bottom of the box", "I added {canister}, still full"],
                "dg:blade": ["there is {blade} in there for {name}, wrapped up",
                             "I packed {blade}, do not tell anyone"],
                "lookalike": ["it is only the charger, the batteries stay here",
                              "the knife block is empty, I kept the knives",
                              "the camping stove is new, no gas with it",
                              "just an empty fire extinguisher bracket"],
            },
        },
        "test": {
            "fill": {
                "name": ["my godson", "a client", "my aunt"],
                "town": ["Tallinn", "Porto", "Bergen"],
                "vague": ["misc. items", "present", "used goods"],
                "device": ["a laptop", "a smartwatch", "a drone"],
                "cells": ["C cells", "a pack of D batteries"],
                "liquid": ["vinegar", "hair conditioner"],
                "metal": ["a spanner set", "door hinges"],
                "textile": ["bed sheets", "a rain jacket"],
                "paper": ["comics", "sheet music"],
                "food": ["tea bags", "rice crackers"],
                "battery": ["a swollen power bank", "18650 cells in a bag", "a scooter battery pack"],
                "fuel": ["camping stove fuel", "acetone", "a jerrycan of petrol"],
                "canister": ["a scuba tank", "hairspray cans", "a butane refill"],
                "blade": ["a cleaver", "a sword stick", "throwing knives"],
            },
            "text": {
                "opener": ["", "Sender says: ", "PS "],
                "closer": ["", " Ta.", " Keep upright."],
                "neutral": ["None.", "Nothing to add."],
                "ship": ["Christmas parcel for {name}.", "Some of my things going to {town}."],
                "invoice": ["Goods sold to {name}, no invoice enclosed.", "Trade stock for {town}, paperwork later."],
                "address": ["Street only, {name} will meet the driver.", "New address in {town}, flat unknown."],
                "dg:lithium": ["Plus {battery}, not in a device.", "{battery} packed in with the clothes."],
                "dg:flammable": ["Plus {fuel} for {name}.", "{fuel} in a plastic bottle, sealed with tape."],
                "dg:pressurised": ["Plus {canister}, full.", "{canister} for {name}'s hobby."],
                "dg:blade": ["Plus {blade} as a gift.", "{blade} for {name}, in its sheath."],
                "lookalike": ["Torch with a wind-up dynamo, no battery.", "Water-based paints for a child.",
                              "Plastic toy sword for a costume."],
            },
            "speech": {
                "opener": ["", "Morning, ", "Hey there, "],
                "closer": [".", ", ta.", ", okay bye."],
                "remark": ["collect any time after lunch please", "the side gate will be open"],
                "ship": ["it is a Christmas parcel for {name}", "some of my own things going to {town}"],
                "invoice": ["I sold this to {name}, there is no invoice", "it is trade stock, paperwork to follow"],
                "address": ["I only have the street, {name} will meet your driver",
                            "they moved house in {town} and I lost the flat number"],
                "dg:lithium": ["{battery} went in with the clothes, I did not write it down",
                               "I squeezed {battery} in beside the shoes"],
                "dg:flammable": ["{fuel} is in a plastic bottle in the corner",
                                 "I sent {fuel} to {name} as well"],
                "dg:pressurised": ["I packed {canister} in the middle, still pressurised",
                                   "{name} asked me to send {canister}"],
                "dg:blade": ["I put {blade} in there, just keep it quiet", "I wrapped {blade} for {name} in a towel"],
                "lookalike": ["the torch is wind-up, there is no battery in it",
                              "the paints are water-based, safe for kids",
                              "it is a plastic sword for a school play"],
            },
        },
    },
}
# fmt: on


# ---------------------------------------------------------------------------------------------
# The recipes. Each makes the items of one set: plans them, writes their media under the folder
# and returns manifest records (media paths relative to the folder).


@dataclass
class Job:
    rng: np.random.Generator
    out_dir: Path
    n_items: int
    first: int = 0  # the number of the job's first item (item ids go on from an earlier job)
    test_only: bool = False


PODCAST_RATES = {"clean": None, "ad": 0.20, "unsafe": 0.05}  # None: the rest
PODCAST_AUDIO_ONLY = 1 / 3  # of every label: a neutral blurb, only the clip tells
PODCAST_LOOKALIKE = 0.15  # of clean clips: talk about scams, betting or cures, innocently
PODCAST_SUBTYPES = ("scam", "gambling", "health")
# Words the unsafe blurbs and clips use; a neutral blurb contains none of them.
PODCAST_RARE_WORDS = ("coin", "bitcoin", "dogecoin", "litecoin", "token", "ether", "wallet", "savings", "bank",
                      "casino", "bet", "slots", "cure", "remedy", "silver", "detox", "garlic", "kernels", "bleach",
                      "ozone", "medicine", "doctor", "chemo", "inhaler", "seizure", "scam", "fraud")  # fmt: skip
PODCAST_CONFIG = label_config(
    [("Text", "blurb", "blurb"), ("Audio", "clip", "clip")],
    [("Rating", "rating", "clip", ["clean", "ad", "unsafe"])],
)


def podcast(job: Job) -> list[dict[str, Any]]:
    """Podcast clips with an episode blurb, no image: rate clean, ad or unsafe (rare: scams,
    gambling pushes, dangerous health advice). A third of each label has a neutral blurb, so only
    the clip tells; look-alike clips talk about scams and cures innocently. Speech by flite."""
    rng, voices = job.rng, flite_voices()
    records = []
    plan = _plan(job, PODCAST_RATES, ("unsafe",), dict.fromkeys(PODCAST_RATES, PODCAST_AUDIO_ONLY))
    for i, item in enumerate(_progress(plan), start=job.first):
        split, label = item["split"], item["label"]
        slots = _slots(rng, "podcast", split)
        role, tags = label, []
        if label == "unsafe":
            role = f"unsafe:{rng.choice(PODCAST_SUBTYPES)}"
            tags.append(role)
        elif label == "clean" and rng.random() < PODCAST_LOOKALIKE:
            role = "lookalike"
            tags.append(role)
        if item["audio_only"]:
            tags.append("audio_only")
        speech = _say(rng, "podcast", split, "speech", role, slots)
        blurb = _say(rng, "podcast", split, "text", "neutral" if item["audio_only"] else role, slots)
        item_id, rate = f"item-{i:04d}", int(rng.choice(RATES))
        audio = f"audio/{item_id}.wav"
        save_audio(speech_wave(str(rng.choice(voices)), speech, rate, rng), rate, job.out_dir / audio, rng)
        records.append({"id": item_id, "text": blurb, "audio": audio, "label": {"rating": label}, "tags": tags,
                        "split": split, "speech": speech})  # fmt: skip
    return records


CLIPS_RATES = {"": None, "alert": 0.06}  # "": no alert
CLIPS_SCENES = ("sun", "house", "tree", "boat")  # drawn in the frame; balanced
CLIPS_TRACKS = (("speech",), ("music",), ("music", "speech"))  # non-alert tracks, drawn uniformly
CLIPS_MUSIC_UNDER_ALERT = 0.5
CLIPS_LOOKALIKE = 0.2  # of non-alert speech: mentions fires, floods or the police innocently
CLIPS_FESTIVAL = 0.5  # of speech by festival, the rest by espeak-ng
CLIPS_SUBTYPES = ("fire", "flood", "intruder")
CLIPS_CONFIG = label_config(
    [("Image", "frame", "frame"), ("Audio", "track", "track")],
    [
        ("Scene", "scene", "frame", ["sun", "house", "tree", "boat"]),
        ("What the track holds", "flags:multiple", "track", ["music", "speech", "alert"]),
    ],
)


def clips(job: Job) -> list[dict[str, Any]]:
    """Video-like clips as a frame and a sound track, no text: the frame's scene (drawn: sun,
    house, tree, boat) and the track's flags (music, speech, alert; several at once). Alerts
    (rare: fire, flood, intruder) are only said; look-alikes mention them innocently. Speech by
    festival and espeak-ng, music synthesised."""
    rng, voices = job.rng, [f"espeak-ng:{v}" for v in available_voices()]
    plan = _plan(job, CLIPS_RATES, ("alert",), {})
    scenes = rng.permutation([CLIPS_SCENES[i % len(CLIPS_SCENES)] for i in range(len(plan))])
    records = []
    for i, (item, scene) in enumerate(zip(_progress(plan), scenes, strict=True), start=job.first):
        split, tags, role = item["split"], [], "speech"
        slots = _slots(rng, "clips", split)
        if item["label"] == "alert":
            role = f"alert:{rng.choice(CLIPS_SUBTYPES)}"
            flags = ["speech", "alert"] + (["music"] if rng.random() < CLIPS_MUSIC_UNDER_ALERT else [])
            tags.append(role)
        else:
            flags = list(CLIPS_TRACKS[rng.integers(len(CLIPS_TRACKS))])
            if "speech" in flags and rng.random() < CLIPS_LOOKALIKE:
                role = "lookalike"
                tags.append(role)
        item_id, rate = f"item-{i:04d}", int(rng.choice(RATES))
        frame, track = f"images/{item_id}.png", f"audio/{item_id}.wav"
        draw_scene(rng, str(scene), job.out_dir / frame)
        speech = _say(rng, "clips", split, "speech", role, slots) if "speech" in flags else ""
        wave = np.zeros(0, np.float32)
        if speech:
            voice = f"festival:{FESTIVAL_VOICE}" if rng.random() < CLIPS_FESTIVAL else str(rng.choice(voices))
            wave = speech_wave(voice, speech, rate, rng)
        if "music" in flags:
            n = len(wave) if speech else int(rng.uniform(2.5, 6.0) * rate)
            wave = music(rng, rate, n) * (10 ** (-rng.uniform(6, 18) / 20) if speech else 1.0) + np.pad(
                wave, (0, n - len(wave))
            )
        save_audio(wave, rate, job.out_dir / track, rng)
        label = {"scene": str(scene), "flags": [f for f in ("music", "speech", "alert") if f in flags]}
        records.append({"id": item_id, "image": frame, "audio": track, "label": label, "tags": tags,
                        "split": split, "speech": speech})  # fmt: skip
    return records


def music(rng: np.random.Generator, rate: int, n: int) -> np.ndarray:
    """A plucked pentatonic tune (three harmonics, decaying notes), sometimes with a noise beat."""
    base, note_s = rng.uniform(110, 262), rng.uniform(0.15, 0.45)
    t = np.arange(int(note_s * rate)) / rate
    decay = np.exp(-t * rng.uniform(3, 9))
    notes = []
    for _ in range(n // len(t) + 1):
        f = base * 2 ** ((rng.choice([0, 2, 4, 7, 9]) + 12 * rng.integers(2)) / 12)
        notes.append(sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3)) * decay)
    tune = np.concatenate(notes)
    if rng.random() < 0.5:
        tune += np.tile(rng.standard_normal(len(t)) * decay**4 * 0.5, len(notes))
    return (tune[:n] / 2).astype(np.float32)


def _sun(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, colour: tuple) -> None:
    r = side * rng.uniform(0.1, 0.2)
    x, y = rng.uniform(r * 2, side - r * 2), rng.uniform(r * 2, side * 0.55)
    for a in np.linspace(0, 2 * np.pi, int(rng.integers(8, 14)), endpoint=False) + rng.uniform(0, 1):
        draw.line([x, y, x + 1.8 * r * np.cos(a), y + 1.8 * r * np.sin(a)], fill=colour, width=max(1, int(r / 5)))
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _house(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, colour: tuple) -> None:
    w, h = side * rng.uniform(0.25, 0.45), side * rng.uniform(0.2, 0.35)
    x, y = rng.uniform(0, side - w), rng.uniform(side * 0.4, side - h)
    draw.rectangle([x, y, x + w, y + h], fill=colour)
    draw.polygon([(x - w * 0.1, y), (x + w / 2, y - h * rng.uniform(0.5, 0.9)), (x + w * 1.1, y)], fill=_colour(rng))
    draw.rectangle([x + w * 0.4, y + h * 0.45, x + w * 0.6, y + h], fill=_colour(rng))


def _tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, colour: tuple) -> None:
    h, x = side * rng.uniform(0.35, 0.6), rng.uniform(side * 0.15, side * 0.85)
    base, crown = side - rng.uniform(0, side * 0.15), side * rng.uniform(0.12, 0.22)
    draw.rectangle([x - crown * 0.15, base - h, x + crown * 0.15, base], fill=_colour(rng))
    if rng.random() < 0.5:
        draw.ellipse([x - crown, base - h - crown, x + crown, base - h + crown * 0.8], fill=colour)
    else:
        draw.polygon([(x - crown, base - h * 0.4), (x, base - h - crown), (x + crown, base - h * 0.4)], fill=colour)


def _boat(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, colour: tuple) -> None:
    w = side * rng.uniform(0.3, 0.5)
    x, y = rng.uniform(0, side - w), rng.uniform(side * 0.55, side * 0.85)
    draw.polygon([(x, y), (x + w, y), (x + w * 0.8, y + w * 0.2), (x + w * 0.2, y + w * 0.2)], fill=colour)
    draw.line([x + w / 2, y, x + w / 2, y - w * 0.9], fill=(30, 30, 30), width=2)
    draw.polygon([(x + w / 2 + 2, y - w * 0.85), (x + w / 2 + 2, y - 3), (x + w * 0.95, y - 3)], fill=_colour(rng))
    for k in range(3):  # waves
        yy = y + w * 0.25 + k * 4
        draw.line([(xx, yy + 2 * np.sin(xx / 4)) for xx in range(0, side, 3)], fill=_colour(rng), width=1)


DRAWERS = {"sun": _sun, "house": _house, "tree": _tree, "boat": _boat}


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, 3)
    return int(r), int(g), int(b)


def draw_scene(rng: np.random.Generator, scene: str, path: Path) -> None:
    """A 96-160 px picture of one or two of the scene's objects in random colours, sizes and
    places, over a noisy gradient with clutter (small shapes, lines), sometimes blurred."""
    side = int(rng.integers(96, 161))
    ramp = np.linspace(0, 1, side)[:, None, None]
    top, bottom = rng.integers(0, 256, (2, 3))
    bg = top * (1 - ramp) + bottom * ramp + rng.normal(0, rng.uniform(4, 30), (side, side, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 8))):  # clutter, smaller than any object
        x, y, s = *rng.uniform(0, side, 2), rng.uniform(2, 7)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + s, y + s], fill=_colour(rng))
    for _ in range(int(rng.integers(1, 3))):
        DRAWERS[scene](draw, rng, side, _colour(rng))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    img.save(path)


REVIEWS_RATES = {"keep": None, "flag": 0.15, "remove": 0.04}
REVIEWS_AUDIO_ONLY = {"remove": 0.5}  # of removals: a harmless review, only the voice note tells
REVIEWS_LOOKALIKE = {"text": 0.12, "speech": 0.12}  # of keeps: violent or personal words, harmless
REVIEWS_SUBTYPES = ("threat", "personal_data", "spam")
REVIEWS_TELEPHONE = 0.35  # of voice notes: 8 kHz, band-limited like a phone line
REVIEWS_SNR_DB = (5.0, 20.0)  # heavier noise than the other recipes
REVIEWS_PHOTO_SIZE = 128
REVIEWS_FASHION = 0.4  # of photos from Fashion-MNIST, when installed; the rest crops of real photos
REVIEWS_TEST_FROM_X = 0.6  # test crops come from the right 40% of each photo, pool crops from the rest
REVIEWS_CONFIG = label_config(
    [("Image", "photo", "photo"), ("Text", "review", "review"), ("Audio", "voice", "voice")],
    [("Verdict", "verdict", "review", ["keep", "flag", "remove"])],
)


def reviews(job: Job) -> list[dict[str, Any]]:
    """Product reviews to moderate, with a photo and a voice note (the held-out set until its
    probes informed a choice; `calls` took its place).

    keep, flag (safety complaints, in the text) or remove (rare: threats, personal data, paid
    review spam); half of the removals are said only in the voice note under a harmless review.
    Look-alikes use violent or personal words harmlessly, in text and in speech. Photos are crops
    of real photos (and Fashion-MNIST items when installed); speech by espeak-ng, heavily
    perturbed, a third over a telephone band at 8 kHz."""
    from sklearn.datasets import load_sample_images

    rng, voices = job.rng, [f"espeak-ng:{v}" for v in available_voices()]
    photos = load_sample_images().images
    fashion = {}
    if (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        fashion = {
            "pool": load_fashion_mnist(FASHION_MNIST_DIR, "train")[0],
            "test": load_fashion_mnist(FASHION_MNIST_DIR, "t10k")[0],
        }
    records = []
    plan = _plan(job, REVIEWS_RATES, ("remove",), REVIEWS_AUDIO_ONLY)
    for i, item in enumerate(_progress(plan), start=job.first):
        split, label, tags = item["split"], item["label"], []
        slots = _slots(rng, "reviews", split)
        text_role = speech_role = "remark"
        if label == "remove":
            role = f"remove:{rng.choice(REVIEWS_SUBTYPES)}"
            text_role, speech_role = ("keep", role) if item["audio_only"] else (role, "remark")
            tags += [role] + (["audio_only"] if item["audio_only"] else [])
        else:
            text_role = label
            if label == "keep" and rng.random() < REVIEWS_LOOKALIKE["text"]:
                text_role = "lookalike"
            if label == "keep" and rng.random() < REVIEWS_LOOKALIKE["speech"]:
                speech_role = "lookalike"
            tags += ["lookalike"] if "lookalike" in (text_role, speech_role) else []
        review = _say(rng, "reviews", split, "text", text_role, slots)
        speech = _say(rng, "reviews", split, "speech", speech_role, slots)
        item_id = f"item-{i:04d}"
        photo, voice = f"images/{item_id}.png", f"audio/{item_id}.wav"
        if fashion and rng.random() < REVIEWS_FASHION:
            pixels = fashion[split][rng.integers(len(fashion[split]))]
            render_image(pixels, rng.uniform(0.6, 1.0, size=3).astype(np.float32), job.out_dir / photo)
        else:
            crop_photo(rng, photos[rng.integers(len(photos))], split, job.out_dir / photo)
        telephone = bool(rng.random() < REVIEWS_TELEPHONE)
        rate = 8000 if telephone else int(rng.choice(RATES[1:]))
        tags += ["telephone"] if telephone else []
        wave = speech_wave(str(rng.choice(voices)), speech, rate, rng, telephone, tempo=(0.8, 1.25), cents=400)
        save_audio(wave, rate, job.out_dir / voice, rng, REVIEWS_SNR_DB)
        records.append({"id": item_id, "image": photo, "text": review, "audio": voice, "label": {"verdict": label},
                        "tags": tags, "split": split, "speech": speech})  # fmt: skip
    return records


def crop_photo(rng: np.random.Generator, photo: np.ndarray, split: str, path: Path) -> None:
    """A random square crop (64 px up to the region's size), flipped half the time, with its
    brightness changed, scaled to REVIEWS_PHOTO_SIZE; pool and test crops come from different regions."""
    h, w = photo.shape[:2]
    x0, x1 = (0, int(w * REVIEWS_TEST_FROM_X)) if split == "pool" else (int(w * REVIEWS_TEST_FROM_X), w)
    s = int(rng.integers(64, min(h, x1 - x0) + 1))
    x, y = int(rng.integers(x0, x1 - s + 1)), int(rng.integers(0, h - s + 1))
    crop = photo[y : y + s, x : x + s].astype(np.float32) * rng.uniform(0.7, 1.2)
    img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img.resize((REVIEWS_PHOTO_SIZE, REVIEWS_PHOTO_SIZE), Image.Resampling.BICUBIC).save(path)


CALLS_RATES = {"none": None, "supervisor": 0.12, "security": 0.05}
CALLS_REASONS = ("billing", "outage", "move", "upgrade")
CALLS_AGENT_ONLY = {"security": 0.5}  # of security cases: the customer only states the reason, the agent tells
CALLS_NEUTRAL_TICKET = 1 / 3  # of calls that are not escalated: the ticket says nothing, the customer tells
CALLS_LOOKALIKE = {"speech": 0.10, "agent": 0.10}  # of calls not escalated: security talk, harmless
CALLS_SUBTYPES = ("takeover", "sim_swap", "impersonation")
CALLS_NARROWBAND = 0.7  # of recordings at 8 kHz, the rest at 16 kHz; all band-limited like a phone line
CALLS_SNR_DB = (8.0, 25.0)
CALLS_CONFIG = label_config(
    [("Text", "ticket", "ticket"), ("Audio", "customer", "customer"), ("Audio", "agent", "agent")],
    [
        ("Reason for the call", "reason", "ticket", list(CALLS_REASONS)),
        ("Escalate to", "escalate", "customer", ["none", "supervisor", "security"]),
    ],
)


def calls(job: Job) -> list[dict[str, Any]]:
    """Support calls as a ticket line and two recordings, the customer's side and the agent's (two
    Audio objects: records carry Label Studio's task data, keyed by the config). The held-out set
    until what it showed changed a training rule; `meters` took its place.

    `reason` (billing, outage, move, upgrade) is in the ticket, or for a third of calls not
    escalated only in what the customer says. `escalate`: none, supervisor (an angry customer) or
    security (rare: account takeover, SIM swap, impersonation), which in half the cases only the
    agent's side tells. Look-alikes talk about security harmlessly on either side. Customers by
    flite and espeak-ng, the agent by festival; every recording narrowband and noisy."""
    rng = job.rng
    customers = flite_voices() + [f"espeak-ng:{v}" for v in available_voices()]
    plan = _plan(job, CALLS_RATES, ("security",), CALLS_AGENT_ONLY)
    reasons = rng.permutation([CALLS_REASONS[i % len(CALLS_REASONS)] for i in range(len(plan))])
    records = []
    for i, (item, reason) in enumerate(zip(_progress(plan), map(str, reasons), strict=True), start=job.first):
        split, label, tags = item["split"], item["label"], []
        slots = _slots(rng, "calls", split)
        said, agent_role, ticket = reason, "routine", reason
        if label == "supervisor":
            said = "supervisor"
        elif label == "security":
            role = f"security:{rng.choice(CALLS_SUBTYPES)}"
            said, agent_role = (reason, role) if item["audio_only"] else (role, "routine")
            tags += [role] + (["agent_only", "audio_only"] if item["audio_only"] else [])
        else:
            if rng.random() < CALLS_LOOKALIKE["speech"]:
                said = "lookalike"  # the reason is then in the ticket alone
            elif rng.random() < CALLS_NEUTRAL_TICKET:
                ticket = "neutral"
                tags += ["speech_only", "audio_only"]
            if rng.random() < CALLS_LOOKALIKE["agent"]:
                agent_role = "lookalike"
            tags += ["lookalike"] if "lookalike" in (said, agent_role) else []
        item_id, data, speech = f"item-{i:04d}", {"ticket": _say(rng, "calls", split, "text", ticket, slots)}, {}
        for side, voice, role in (("customer", str(rng.choice(customers)), said),
                                  ("agent", f"festival:{FESTIVAL_VOICE}", agent_role)):  # fmt: skip
            speech[side] = _say(rng, "calls", split, "speech" if side == "customer" else "agent", role, slots)
            rate = 8000 if rng.random() < CALLS_NARROWBAND else 16000
            data[side] = f"audio/{item_id}-{side}.wav"
            wave = speech_wave(voice, speech[side], rate, rng, telephone=True)
            save_audio(wave, rate, job.out_dir / data[side], rng, CALLS_SNR_DB)
        label_of = {"reason": reason, "escalate": label}
        records.append({"id": item_id, "data": data, "label": label_of, "tags": tags, "split": split,
                        "speech": speech["customer"], "agent_speech": speech["agent"]})  # fmt: skip
    return records


METERS_RATES = {"File, no action": None, "Re-read: no access": 0.16, "Bill query (£)": 0.12,
                "Suspected tampering": 0.06, "Urgent – gas/CO!": 0.03}  # fmt: skip
METERS_RARE = ("Suspected tampering", "Urgent – gas/CO!")
METERS_ROLES = dict(zip(METERS_RATES, ("file", "reread", "bill", "tamper", "safety"), strict=True))
METERS_SUBTYPES = {"tamper": ("bypass", "magnet", "seal"), "safety": ("gas", "scorch", "co")}
METERS_AUDIO_ONLY = dict.fromkeys(METERS_RATES, 0.3)  # of every label: a neutral note, only the memo tells
METERS_CHART_ONLY = 0.3  # of tampering the memo and notes miss: only the meter's logged event tells
METERS_EVENT_TOO = 0.5  # of the other tampering cases: the meter logged it as well
METERS_LOOKALIKE = {"text": 0.12, "speech": 0.12}  # of routine visits: seals, magnets, gas, harmless
METERS_BENIGN_EVENT = 0.15  # of visits not for tampering: a harmless event marked on the chart
METERS_USAGE = ("Steady", "Rising", "Spike", "Days at zero")  # the chart's shape; balanced
# The meter's logged events: tampering (by sub-type) marked by a red triangle, harmless ones by other marks.
TAMPER_EVENTS = {"bypass": "current imbalance", "magnet": "magnetic interference", "seal": "cover opened"}
BENIGN_EVENTS = {"meter exchanged": "circle", "tariff change": "square", "low battery": "triangle"}
METERS_FORMATS = ("wav", "flac", "ogg")  # the memo's container, drawn per item
METERS_SNR_DB = (12.0, 35.0)
METERS_CONFIG = label_config(
    [
        ("Image", "readings", "readings_png"),
        ("HyperText", "report", "report_html"),
        ("AudioPlus", "memo", "voice_memo"),
    ],
    [
        ("Route the visit", "triage", "report", list(METERS_RATES)),
        ("Usage in the chart", "usage", "readings", list(METERS_USAGE)),
    ],
)


def meters(job: Job) -> list[dict[str, Any]]:
    """Meter-reading visits to review (the held-out set until what it showed changed how audio-free
    heads are judged; `parcels` took its place). Each is the reader's typed report (HTML, a HyperText
    object), the meter's usage chart (Image) and a voice memo recorded on site (AudioPlus, as WAV,
    FLAC or Ogg Vorbis).

    `triage`: file, re-read, bill query, or two rare labels: suspected tampering (bypass, magnet,
    broken seal) and urgent safety (gas, scorching, carbon monoxide). A share of each label is told
    by the memo alone under a neutral note; some tampering only by the chart, where the meter
    logged the event (a red triangle), while harmless events get other marks. `usage`: the chart's
    shape. Look-alikes talk of seals, magnets and gas harmlessly. Speech by flite, espeak-ng and
    festival, mixed per item, with rooms, hum, music, pauses and clipping."""
    rng = job.rng
    voices = flite_voices() + [f"espeak-ng:{v}" for v in available_voices()] + [f"festival:{FESTIVAL_VOICE}"]
    plan = _plan(job, METERS_RATES, METERS_RARE, METERS_AUDIO_ONLY)
    _mark_chart_only(rng, plan)
    usages = rng.permutation([METERS_USAGE[i % len(METERS_USAGE)] for i in range(len(plan))])
    records = []
    for i, (item, usage) in enumerate(zip(_progress(plan), map(str, usages), strict=True), start=job.first):
        split, label = item["split"], item["label"]
        slots = _slots(rng, "meters", split)
        role, note, said, tags = _meters_roles(rng, item)
        events = _meters_events(rng, item, role)
        tags += ["lookalike"] if "lookalike" in (note, said) else []
        tags += ["benign_event"] if events and events[0] in BENIGN_EVENTS else []
        item_id = f"item-{i:04d}"
        chart, memo = f"images/{item_id}.png", f"audio/{item_id}.{rng.choice(METERS_FORMATS)}"
        draw_chart(rng, usage, events, job.out_dir / chart)
        report = visit_report(rng, _say(rng, "meters", split, "text", note, slots))
        speech = _say(rng, "meters", split, "speech", said, slots)
        tags += voice_memo(rng, _engine_voice(rng, voices), speech, job.out_dir / memo)
        records.append({"id": item_id, "image": chart, "text": report, "audio": memo,
                        "label": {"triage": label, "usage": usage}, "tags": tags, "split": split,
                        "speech": speech, "events": events})  # fmt: skip
    return records


def _mark_chart_only(rng: np.random.Generator, plan: list[dict[str, Any]]) -> None:
    """Per split, METERS_CHART_ONLY of the tampering cases the audio does not decide (at least one
    where there are any) are told by the chart alone."""
    for split in ("pool", "test"):
        free = [p for p in plan if p["split"] == split and p["label"] == "Suspected tampering" and not p["audio_only"]]
        k = round(len(free) * METERS_CHART_ONLY) or min(1, len(free))
        for j in rng.permutation(len(free))[:k]:
            free[j]["chart_only"] = True


def _meters_roles(rng: np.random.Generator, item: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    """The item's role (with its sub-type), the note's, the memo's and the item's tags. The memo
    repeats what the note tells half the time, else it chats; look-alikes only among routine visits."""
    role = METERS_ROLES[item["label"]]
    if role in METERS_SUBTYPES:
        role = f"{role}:{rng.choice(METERS_SUBTYPES[role])}"
    tags = [role] if ":" in role else []
    if item["audio_only"]:
        return role, "neutral", role, [*tags, "audio_only"]
    if item.get("chart_only"):
        return role, "file", str(rng.choice(["file", "remark"])), [*tags, "image_only"]
    note, said = role, role if rng.random() < 0.5 else "remark"
    if role == "file":
        note = "lookalike" if rng.random() < METERS_LOOKALIKE["text"] else note
        said = "lookalike" if rng.random() < METERS_LOOKALIKE["speech"] else said
    return role, note, said, tags


def _meters_events(rng: np.random.Generator, item: dict[str, Any], role: str) -> list[str]:
    """What the meter logged: its tampering event (always when only the chart tells), or now and
    then a harmless one."""
    if item["label"] == "Suspected tampering":
        logged = item.get("chart_only") or rng.random() < METERS_EVENT_TOO
        return [TAMPER_EVENTS[role.partition(":")[2]]] if logged else []
    return [str(rng.choice(list(BENIGN_EVENTS)))] if rng.random() < METERS_BENIGN_EVENT else []


def _engine_voice(rng: np.random.Generator, voices: list[str]) -> str:
    """An engine drawn uniformly, then one of its voices: espeak-ng's many voices don't crowd out the rest."""
    engines = sorted({v.partition(":")[0] for v in voices})
    engine = str(rng.choice(engines))
    return str(rng.choice([v for v in voices if v.startswith(f"{engine}:")]))


def visit_report(rng: np.random.Generator, note: str) -> str:
    """The reader's form as HTML: a reference, a date and a serial around the note itself."""
    ref, day, serial = rng.integers(10000, 99999), rng.integers(1, 29), rng.integers(10**6, 10**7)
    month = str(rng.choice(["Jan", "Feb", "Mar", "Oct", "Nov", "Dec"]))
    rows = f"<tr><th>Date</th><td>{day} {month}</td></tr><tr><th>Serial</th><td>E{serial}</td></tr>"
    head = f"<h4>Visit {ref} · field read</h4>"
    return f'<div class="visit">{head}<table>{rows}</table><p>{escape(note, quote=False)}</p></div>'


# ---------------------------------------------------------------------------------------------
# Charts: a month or so of daily use, as bars, a line, an area or steps, with the meter's events
# marked above the plot.


def usage_curve(rng: np.random.Generator, usage: str, days: int) -> np.ndarray:
    """Daily use scaled to at most 1: a weekly cycle and noise, shaped by usage."""
    week = 1 + rng.uniform(0, 0.15) * np.sin(2 * np.pi * np.arange(days) / 7 + rng.uniform(0, 2 * np.pi))
    values = rng.uniform(0.35, 0.6) * week * np.clip(rng.normal(1, 0.1, days), 0.6, 1.4)
    if usage == "Rising":
        values *= np.linspace(rng.uniform(0.35, 0.55), 1.5, days)
    elif usage == "Spike":
        start = int(rng.integers(2, days - 3))
        values[start : start + int(rng.integers(1, 3))] *= rng.uniform(2.2, 3.2)
    elif usage == "Days at zero":
        span = int(rng.integers(4, 11))
        start = int(rng.integers(1, days - span))
        values[start : start + span] = 0.0
    return values / values.max() * rng.uniform(0.7, 0.95)


def draw_chart(rng: np.random.Generator, usage: str, events: list[str], path: Path) -> None:
    """A chart 128-160 px wide in light or dark colours, with grid lines, axes, weekly ticks and
    the events above the plot; sometimes a noisy screenshot."""
    w = int(rng.integers(128, 161))
    h = int(rng.integers(96, w + 1))
    dark = rng.random() < 0.3
    bg = tuple(int(c) for c in (rng.integers(15, 60, 3) if dark else rng.integers(215, 256, 3)))
    ink = tuple(int(c) for c in (rng.integers(150, 230, 3) if dark else rng.integers(20, 110, 3)))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = int(rng.integers(8, 18)), w - int(rng.integers(3, 8)), 22, h - int(rng.integers(8, 15))
    grid = tuple(int((b * 3 + f) / 4) for b, f in zip(bg, ink, strict=True))
    for y in np.linspace(top, bottom, int(rng.integers(3, 6)))[:-1]:
        draw.line([left, y, right, y], fill=grid)
    values = usage_curve(rng, usage, int(rng.integers(21, 43)))
    _plot(draw, rng, values, (left, top, right, bottom), _bright(rng, dark))
    draw.line([left, top, left, bottom, right, bottom], fill=ink)
    step = (right - left) / len(values)
    for day in range(0, len(values), 7):
        draw.line([left + day * step, bottom, left + day * step, bottom + 3], fill=ink)
    for event in events:
        x = left + (rng.integers(len(values)) + 0.5) * step
        _mark(draw, event, float(np.clip(x, 8, w - 8)), 11.0, float(rng.uniform(6, 9)))
    if rng.random() < 0.3:
        noise = rng.normal(0, rng.uniform(3, 12), (h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8), "RGB")
    img.save(path)


def _bright(rng: np.random.Generator, dark: bool) -> tuple[int, int, int]:
    """A plot colour that is neither red (the tampering mark's) nor close to the background."""
    hue = rng.uniform(0.12, 0.85)  # red sits at both ends of the hue circle
    value = rng.uniform(0.65, 1.0) if dark else rng.uniform(0.35, 0.75)
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), value)
    return int(r * 255), int(g * 255), int(b * 255)


def _plot(draw: ImageDraw.ImageDraw, rng: np.random.Generator, values: np.ndarray, box: tuple, colour: tuple) -> None:
    left, top, right, bottom = box
    step = (right - left) / len(values)
    xs = left + (np.arange(len(values)) + 0.5) * step
    ys = bottom - values * (bottom - top)
    style = str(rng.choice(["bars", "line", "area", "steps"]))
    if style == "bars":
        gap = step * rng.uniform(0.1, 0.35)
        for x, y in zip(xs, ys, strict=True):
            draw.rectangle([x - step / 2 + gap / 2, y, x + step / 2 - gap / 2, bottom], fill=colour)
    elif style == "steps":
        points = [(x + dx, y) for x, y in zip(xs, ys, strict=True) for dx in (-step / 2, step / 2)]
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    else:
        points = list(zip(xs.tolist(), ys.tolist(), strict=True))
        if style == "area":
            draw.polygon([(xs[0], bottom), *points, (xs[-1], bottom)], fill=colour)
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))


def _mark(draw: ImageDraw.ImageDraw, event: str, x: float, y: float, r: float) -> None:
    """Tampering: a red triangle with a white bar; harmless events: a blue circle, a grey square
    or an amber triangle (the look-alike)."""
    shape = BENIGN_EVENTS.get(event, "tamper")
    triangle = [(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)]
    if shape == "tamper":
        draw.polygon(triangle, fill=(220, 20, 30))
        draw.line([x, y - r * 0.3, x, y + r * 0.35], fill=(255, 255, 255), width=2)
    elif shape == "triangle":
        draw.polygon(triangle, fill=(240, 180, 20))
    elif shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 90, 220))
    else:
        draw.rectangle([x - r * 0.8, y - r * 0.8, x + r * 0.8, y + r * 0.8], fill=(130, 130, 130))


# ---------------------------------------------------------------------------------------------
# Voice memos: recorded in cupboards and stairwells, over a radio or the hum of the mains, in
# whichever format the reader's phone saved.


def voice_memo(rng: np.random.Generator, voice: str, text: str, path: Path) -> list[str]:
    """text spoken by voice in a room (reverb or echo) or dry, sometimes muffled (low-pass), with a
    pause, a bed of hum or music, noise and clipping each drawn per item; written at a rate from
    RATES in the format path's suffix names. Returns the tags of what was done."""
    rate, effects, tags = int(rng.choice(RATES)), [], []
    room = rng.random()
    if room < 0.3:
        effects += ["reverb", f"{rng.uniform(30, 80):.0f}", "50", f"{rng.uniform(40, 100):.0f}"]
        tags.append("reverb")
    elif room < 0.5:
        effects += ["echo", "0.8", "0.7", f"{rng.uniform(40, 120):.0f}", f"{rng.uniform(0.2, 0.4):.2f}"]
        tags.append("echo")
    if rng.random() < 0.25:
        effects += ["lowpass", str(int(rng.integers(1800, 3400)))]
        tags.append("muffled")
    wave = speech_wave(voice, text, rate, rng, extra=tuple(effects))
    if rng.random() < 0.3 and len(paused := _pause(rng, wave, rate)) > len(wave):
        wave = paused
        tags.append("pause")
    bed = rng.random()
    if bed < 0.4:
        under = _hum(rng, rate, len(wave)) if bed < 0.2 else music(rng, rate, len(wave))
        level = np.sqrt(np.mean(wave**2) / max(np.mean(under**2), 1e-12)) * 10 ** (-rng.uniform(10, 22) / 20)
        wave = wave + under * level
        tags.append("hum" if bed < 0.2 else "music")
    wave = noisy(wave, rate, rng, METERS_SNR_DB)
    wave /= max(np.abs(wave).max(), 1e-6)
    if rng.random() < 0.2:  # an overdriven phone microphone
        wave = np.clip(wave * rng.uniform(2, 5), -1, 1)
        tags.append("clipped")
    write_audio(wave * rng.uniform(0.3, 0.9), rate, path, rng)
    return tags


def _pause(rng: np.random.Generator, wave: np.ndarray, rate: int) -> np.ndarray:
    """A silence of 0.2-0.7 s at the quietest 20 ms of the middle third (a gap between words),
    only as long as the take stays within MAX_CLIP_S."""
    frame = rate // 50
    room = int(MAX_CLIP_S * rate) - len(wave)
    middle = wave[len(wave) // 3 : 2 * len(wave) // 3]
    if room < frame or len(middle) < frame:
        return wave
    energy = (middle[: len(middle) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1)
    cut = len(wave) // 3 + int(energy.argmin()) * frame + frame // 2
    gap = np.zeros(min(room, int(rng.uniform(0.2, 0.7) * rate)), np.float32)
    return np.concatenate([wave[:cut], gap, wave[cut:]])


def _hum(rng: np.random.Generator, rate: int, n: int) -> np.ndarray:
    """Mains hum: 50 Hz and its odd harmonics, slowly wavering."""
    t = np.arange(n) / rate
    wobble = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    return (sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6)) / k for k in (1, 3, 5)) * wobble).astype(np.float32)


def write_audio(wave: np.ndarray, rate: int, path: Path, rng: np.random.Generator) -> None:
    """WAV (24-bit PCM), FLAC (16-bit) or Ogg Vorbis by path's suffix. Vorbis goes through sox in
    repeatable mode: libsndfile's Ogg streams take a random serial number, so files would differ."""
    wave = wave.astype(np.float32)
    if path.suffix != ".ogg":
        sf.write(path, wave, rate, subtype="PCM_24" if path.suffix == ".wav" else "PCM_16")
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "memo.wav"
        sf.write(raw, wave, rate, subtype="PCM_16")
        cmd = ["sox", "-R", "-V1", str(raw), "-C", str(int(rng.integers(0, 7))), str(path)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise DemoDataError(f"sox failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


# ---------------------------------------------------------------------------------------------
# Parcels: a courier's depot screens what it ships. The form and the call name the goods, the scan
# shows them; only the form and the scan together tell when the two disagree.

PARCELS_RATES = {"ship": None, "invoice_missing": 0.13, "address_check": 0.09, "contents_mismatch": 0.06,
                 "undeclared_DG": 0.04}  # fmt: skip
PARCELS_RARE = ("undeclared_DG",)
PARCELS_ROLES = dict(zip(PARCELS_RATES, ("ship", "invoice", "address", "ship", "dg"), strict=True))
PARCELS_SUBTYPES = ("lithium", "flammable", "pressurised", "blade")
# Of every label but a mismatch (which needs the form): a neutral form, only the call tells.
PARCELS_AUDIO_ONLY = {label: 1 / 3 for label in PARCELS_RATES if label != "contents_mismatch"}
PARCELS_LOOKALIKE = {"text": 0.12, "speech": 0.12}  # of parcels to ship: chargers, empty knife blocks, pumps
# What a scan can show (the choices), the slot that names each on the form, and how often each is packed.
PARCELS_CONTENTS = {"Electronics": "device", "Loose cells": "cells", "Liquids": "liquid", "Metal": "metal",
                    "Textiles": "textile", "Paper": "paper", "Food": "food"}  # fmt: skip
PARCELS_PACKED = (0.16, 0.08, 0.12, 0.12, 0.24, 0.16, 0.12)
PARCELS_KINDS = (0.45, 0.4, 0.15)  # chances of one, two or three kinds in a parcel
PARCELS_DG_SHOWS = {"lithium": "Loose cells", "flammable": "Liquids", "pressurised": "Metal", "blade": "Metal"}
PARCELS_NAMED = 0.5  # of forms that are not neutral: some of the contents named, else one vague word
PARCELS_GREETING = 0.5  # of calls: the desk's recorded greeting and a beep first
PARCELS_STEREO = 0.5  # of those: desk and caller on a channel each, as call recorders keep them
PARCELS_MP3 = 0.6  # of calls as MP3 at a drawn bitrate, the rest WAV
PARCELS_SNR_DB = (6.0, 28.0)
PARCELS_GREETINGS = ("Parcel desk, speak after the tone", "Pickups, leave your booking after the beep")
PARCELS_CONFIG = label_config(
    [("Image", "xray", "scan_jpg"), ("Text", "cn23", "declaration"), ("Audio", "booking", "call_audio")],
    [
        ("Handling", "handling", "cn23", list(PARCELS_RATES)),
        ("The scan shows", "xray_shows:multiple", "xray", list(PARCELS_CONTENTS)),
    ],
)


def parcels(job: Job) -> list[dict[str, Any]]:
    """HELD OUT: parcels screened at a courier's depot, no default is ever chosen on this set. Each
    is an X-ray scan (Image: a pseudo-colour JPEG), the sender's customs form (Text, field lines)
    and the call that booked the pickup (Audio: MP3 or WAV, mono or stereo).

    `handling`: ship, invoice missing, address check, contents mismatch (the form names goods the
    scan does not show: only the two together tell) or the rare undeclared dangerous goods
    (lithium cells, flammable liquids, pressurised cans, blades), which the sender names innocently
    on the form or in the call. A third of every label but the mismatch is told by the call alone
    under a neutral form. `xray_shows`, several at once: the kinds of goods the scan shows in the
    scanner's material colours; parcels to ship hold loose cells, liquids and metal too.
    Look-alikes name chargers, empty knife blocks and pumps. Callers by flite and espeak-ng, the
    desk's greeting by festival; street noise or a television, dropped packets, 8 kHz phone lines."""
    if "MP3" not in sf.available_formats():
        raise DemoDataError("this libsndfile cannot write MP3 (1.1 or later can)")
    rng, callers = job.rng, flite_voices() + [f"espeak-ng:{v}" for v in available_voices()]
    plan = _plan(job, PARCELS_RATES, PARCELS_RARE, PARCELS_AUDIO_ONLY)
    records = []
    for i, item in enumerate(_progress(plan), start=job.first):
        split, label = item["split"], item["label"]
        slots = _slots(rng, "parcels", split)
        role, note, said, tags = _parcels_roles(rng, item)
        inside = _packed(rng, role)
        declared = _declared(rng, label, inside, note == "neutral")
        item_id = f"item-{i:04d}"
        scan, call = f"images/{item_id}.jpg", f"audio/{item_id}.{'mp3' if rng.random() < PARCELS_MP3 else 'wav'}"
        draw_scan(rng, inside, job.out_dir / scan)
        goods = [slots[PARCELS_CONTENTS[c]] for c in declared] or [slots["vague"]]
        form = customs_form(rng, goods, slots["town"], _say(rng, "parcels", split, "text", note, slots))
        speech = _say(rng, "parcels", split, "speech", said, slots)
        tags += booking_call(rng, _engine_voice(rng, callers), speech, job.out_dir / call)
        records.append({"id": item_id, "image": scan, "text": form, "audio": call,
                        "label": {"handling": label, "xray_shows": inside}, "tags": tags, "split": split,
                        "speech": speech, "declared": declared})  # fmt: skip
    return records


def _parcels_roles(rng: np.random.Generator, item: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    """The item's role (with its sub-type), the form's remark, the call's and the item's tags. The call
    repeats what the form tells half the time, else it only books; look-alikes only among parcels to ship."""
    label, role = item["label"], PARCELS_ROLES[item["label"]]
    if role == "dg":
        role = f"dg:{rng.choice(PARCELS_SUBTYPES)}"
    tags = [role] if ":" in role else ["mismatch"] if label == "contents_mismatch" else []
    if item["audio_only"]:
        return role, "neutral", role, [*tags, "audio_only"]
    note, said = role, role if rng.random() < 0.5 else "remark"
    if label == "ship":
        note = "lookalike" if rng.random() < PARCELS_LOOKALIKE["text"] else note
        said = "lookalike" if rng.random() < PARCELS_LOOKALIKE["speech"] else said
        tags += ["lookalike"] if "lookalike" in (note, said) else []
    return role, note, said, tags


def _packed(rng: np.random.Generator, role: str) -> list[str]:
    """The kinds of goods inside, in the config's order: one to three drawn by PARCELS_PACKED, and
    a dangerous good's own kind."""
    kinds = list(PARCELS_CONTENTS)
    inside = {
        str(c) for c in rng.choice(kinds, rng.choice([1, 2, 3], p=PARCELS_KINDS), replace=False, p=PARCELS_PACKED)
    }
    if role.startswith("dg:"):
        inside.add(PARCELS_DG_SHOWS[role.partition(":")[2]])
    return [c for c in kinds if c in inside]


def _declared(rng: np.random.Generator, label: str, inside: list[str], neutral: bool) -> list[str]:
    """The kinds the form names: none (a vague word) on a neutral form and on half the others, else
    some of those inside; a mismatch names a kind the scan does not show, with or without the rest."""
    kinds = list(PARCELS_CONTENTS)
    if label == "contents_mismatch":
        named = {str(rng.choice([c for c in kinds if c not in inside]))} | {c for c in inside if rng.random() < 0.5}
    elif neutral or rng.random() >= PARCELS_NAMED:
        return []
    else:
        named = {c for c in inside if rng.random() < 0.7} or {str(rng.choice(inside))}
    return [c for c in kinds if c in named]


def customs_form(rng: np.random.Generator, goods: list[str], town: str, remark: str) -> str:
    """The sender's customs form as plain text, its fields one a line or run together with bars (booking
    sites export both); number, value, weight and type are drawn and tell nothing."""
    kind = str(rng.choice(["Gift", "Sale of goods", "Returned goods", "Other"]))
    fields = [f"CN23 no. {rng.integers(10**8, 10**9)}", f"To: {town}", f"Contents: {', '.join(goods)}",
              f"Value: {rng.integers(5, 400)} EUR", f"Weight: {rng.uniform(0.3, 12):.1f} kg", f"Type: {kind}",
              f"Remarks: {remark}"]  # fmt: skip
    return ("\n" if rng.random() < 0.6 else " | ").join(fields)


# ---------------------------------------------------------------------------------------------
# X-ray scans: each object absorbs light in its material's colour (organic orange, metal blue,
# mixed green) and overlaps darken, as on a dual-energy baggage scanner.

SCAN_MATERIALS = {"organic": (1.0, 0.62, 0.28), "mixed": (0.5, 0.85, 0.42), "metal": (0.3, 0.42, 0.85)}


def draw_scan(rng: np.random.Generator, contents: list[str], path: Path) -> None:
    """A landscape scan 128-160 px wide of a box holding one or two objects of each kind in contents,
    at random places and angles; a quarter in greyscale (single-energy scanners); streaks, noise, JPEG
    compression at a drawn quality."""
    light = scan_light(rng, contents)
    pixels = light * rng.uniform(225, 252)
    if rng.random() < 0.25:
        pixels = np.repeat(pixels @ np.array([[0.299], [0.587], [0.114]]), 3, axis=2)
    pixels[rng.integers(0, len(pixels), int(rng.integers(0, 4)))] *= rng.uniform(0.85, 1.08)  # detector streaks
    pixels += rng.normal(0, rng.uniform(1, 8), pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    img.save(path, quality=int(rng.integers(35, 91)))


def scan_light(rng: np.random.Generator, contents: list[str]) -> np.ndarray:
    """The light through the box per pixel and colour, 1 where nothing absorbs: the cardboard, then
    the objects."""
    w, h = int(rng.integers(128, 161)), int(rng.integers(96, 129))
    light = np.ones((h, w, 3))
    x0, y0, x1, y1 = rng.uniform(2, 12), rng.uniform(2, 12), w - rng.uniform(2, 12), h - rng.uniform(2, 12)
    carton = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    _absorb(light, "organic", 0.15, carton)
    _absorb(light, "organic", 0.4, carton, outline=2)
    for kind in contents:
        for _ in range(int(rng.integers(1, 3))):
            PACKED_OBJECTS[kind](light, rng, (x0, y0, x1, y1))
    return light


def _absorb(light: np.ndarray, material: str, thickness: float, *shapes: list, outline: int = 0) -> None:
    """light through one object made of shapes (polygons' corners; with outline only their edges),
    in place: where shapes of one object overlap, it absorbs once."""
    mask = Image.new("L", (light.shape[1], light.shape[0]))
    draw = ImageDraw.Draw(mask)
    for points in shapes:
        draw.polygon(points, fill=None if outline else 255, outline=255 if outline else None, width=outline or 1)
    m = np.asarray(mask, np.float64)[..., None] / 255
    light *= 1 - m * (1 - np.array(SCAN_MATERIALS[material]) ** thickness)


def _spot(rng: np.random.Generator, box: tuple, size: float) -> tuple[float, float, float, float]:
    """A centre inside box, far enough in for most of the object, a length scale (size times the
    box's height) and an angle."""
    x0, y0, x1, y1 = box
    s = size * (y1 - y0)
    mx, my = min(s / 2, (x1 - x0) / 2 - 1), min(s / 2, (y1 - y0) / 2 - 1)
    return rng.uniform(x0 + mx, x1 - mx), rng.uniform(y0 + my, y1 - my), s, rng.uniform(0, np.pi)


def _at(x: float, y: float, angle: float, along: float, across: float = 0.0) -> tuple[float, float]:
    """The point along and across the direction angle from (x, y)."""
    c, s = np.cos(angle), np.sin(angle)
    return x + c * along - s * across, y + s * along + c * across


def _bar(x: float, y: float, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    """A rectangle centred on (x, y), its length along angle."""
    return [_at(x, y, angle, u * length / 2, v * width / 2) for u, v in ((-1, -1), (1, -1), (1, 1), (-1, 1))]


def _oval(x: float, y: float, rx: Any, ry: Any) -> list[tuple[float, float]]:
    """An ellipse as 20 corners; radii given per corner (arrays) make a blob."""
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return list(zip((x + rx * np.cos(t)).tolist(), (y + ry * np.sin(t)).tolist(), strict=True))


def _device(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """A phone, tablet or console: a mixed-material case with a circuit board's traces, and a battery."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.4, 0.7))
    wide = s * rng.uniform(0.45, 0.7)
    traces = [_bar(*_at(x, y, a, 0, wide * rng.uniform(-0.35, 0.35)), s * rng.uniform(0.3, 0.8), 1.5, a)
              for _ in range(int(rng.integers(2, 5)))]  # fmt: skip
    traces += [_bar(*_at(x, y, a, s * rng.uniform(-0.4, 0.4)), wide * rng.uniform(0.3, 0.8), 1.5, a + np.pi / 2)]
    _absorb(light, "mixed", 0.9, _bar(x, y, s, wide, a))
    _absorb(light, "mixed", 0.8, *traces)
    _absorb(light, "metal", 0.7, _bar(*_at(x, y, a, s * 0.25), s * 0.35, wide * 0.7, a))


def _cells(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """A handful of loose cylindrical cells, dense and heaped, each with a denser cap."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.12, 0.2))
    for _ in range(int(rng.integers(2, 7))):
        cx, cy, turn = x + rng.normal(0, s * 0.6), y + rng.normal(0, s * 0.6), a + rng.normal(0, 0.4)
        _absorb(light, "metal", 1.4, _bar(cx, cy, s, s / 3.6, turn))
        _absorb(light, "metal", 0.6, _bar(*_at(cx, cy, turn, s * 0.45), s * 0.1, s / 5, turn))


def _bottle(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """A bottle: a thin plastic shell with its neck, and the liquid filling it part way (dense, organic)."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.45, 0.7))
    wide, level = s * rng.uniform(0.28, 0.42), rng.uniform(0.4, 0.95)
    _absorb(light, "organic", 0.3, _bar(x, y, s, wide, a), _bar(*_at(x, y, a, s * 0.62), s * 0.25, wide * 0.35, a))
    _absorb(light, "organic", 1.6, _bar(*_at(x, y, a, s * (level - 1) / 2), s * level, wide, a))


def _tool(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """A metal tool or pan: a handle ending in a ring, a disc or a tapering blade."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.5, 0.8))
    end, r = _at(x, y, a, s / 2), s * rng.uniform(0.1, 0.3)
    handle = _bar(x, y, s, s * rng.uniform(0.07, 0.12), a)
    shape = str(rng.choice(["ring", "disc", "blade"]))
    if shape == "blade":
        _absorb(light, "metal", 1.2, handle, [_at(*end, a, 0, r * 0.4), _at(*end, a, s * 0.6), end])
    elif shape == "disc":
        _absorb(light, "metal", 1.2, handle, _oval(*_at(*end, a, r * 0.8), r, r))
    else:
        _absorb(light, "metal", 1.2, handle)
        _absorb(light, "metal", 1.2, _oval(*_at(*end, a, r * 0.8), r, r), outline=3)


def _cloth(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """Folded clothes: a soft, faint blob with a few darker folds."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.35, 0.6))
    radii = s * rng.uniform(0.6, 1.0, 20)
    _absorb(light, "organic", rng.uniform(0.35, 0.7), _oval(x, y, radii * 1.3, radii))
    _absorb(light, "organic", 0.4, *[_bar(x, y + k * s * 0.3, s * 1.6, 2, a * 0.2) for k in (-1, 0, 1)])


def _papers(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """Books or letters: a stack of thin, slightly shifted sheets, darker where they overlap."""
    x, y, s, a = _spot(rng, box, rng.uniform(0.4, 0.6))
    for _ in range(int(rng.integers(3, 7))):
        _absorb(light, "organic", 0.2, _bar(x + rng.normal(0, 4), y + rng.normal(0, 4), s, s * 0.7, a))


def _food(light: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """Biscuits, fruit or dried food: small round organic shapes, loosely grouped."""
    x, y, s, _ = _spot(rng, box, rng.uniform(0.1, 0.16))
    for _ in range(int(rng.integers(3, 9))):
        r = s * rng.uniform(0.4, 0.8)
        _absorb(light, "organic", rng.uniform(0.6, 1.0), _oval(*rng.normal((x, y), s * 1.2), r, r * 0.8))


PACKED_OBJECTS = {"Electronics": _device, "Loose cells": _cells, "Liquids": _bottle, "Metal": _tool,
                  "Textiles": _cloth, "Paper": _papers, "Food": _food}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Booking calls: a caller from home or the street, sometimes after the desk's recorded greeting,
# over a phone line or an app that drops packets.


def booking_call(rng: np.random.Generator, voice: str, text: str, path: Path) -> list[str]:
    """text said by voice at a rate from RATES (8 kHz: a phone line, band-limited), after the desk's
    greeting and a beep in PARCELS_GREETING of calls (on a channel of its own in PARCELS_STEREO of
    those); traffic or a television behind the caller, noise, and lost packets, each drawn per call;
    written as MP3 at a drawn bitrate or as WAV by path's suffix. Returns the tags of what was done."""
    rate = int(rng.choice(RATES))
    phone = rate == 8000
    tags, desk = ["telephone"] if phone else [], np.zeros(0, np.float32)
    if rng.random() < PARCELS_GREETING:
        greeting = str(rng.choice(PARCELS_GREETINGS))
        desk = speech_wave(f"festival:{FESTIVAL_VOICE}", greeting, rate, rng, phone, tempo=(1.05, 1.3), cents=100)
        desk = np.concatenate([desk, _beep(rng, rate)])
        tags.append("greeting")
    caller = speech_wave(voice, text, rate, rng, phone, max_s=MAX_CLIP_S - 0.5 - len(desk) / rate)
    bed = rng.random()
    if bed < 0.45:
        under = _traffic(rng, rate, len(caller)) if bed < 0.3 else music(rng, rate, len(caller))
        level = np.sqrt(np.mean(caller**2) / max(np.mean(under**2), 1e-12)) * 10 ** (-rng.uniform(6, 18) / 20)
        caller = caller + under * level
        tags.append("traffic" if bed < 0.3 else "television")
    if len(desk) and rng.random() < PARCELS_STEREO:
        sides = [np.pad(desk, (0, len(caller))), np.pad(caller, (len(desk), 0))]
        tags.append("stereo")
    else:
        sides = [np.concatenate([desk, caller])]
    sides = [noisy(side, rate, rng, PARCELS_SNR_DB) for side in sides]
    wave = np.stack([np.pad(side, (0, max(map(len, sides)) - len(side))) for side in sides], axis=1)
    if rng.random() < 0.25:
        _drop_packets(rng, wave[:, -1], rate)
        tags.append("dropouts")
    # The level by the loudest 0.1%, not the peak: the click noisy's rumble can end on must not set it.
    wave = np.clip(wave * rng.uniform(0.3, 0.9) / max(np.percentile(np.abs(wave), 99.9), 1e-6), -1, 1)
    if path.suffix == ".mp3":
        sf.write(path, wave.astype(np.float32), rate, compression_level=float(rng.uniform(0.2, 0.9)))
    else:
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
    return tags


def _beep(rng: np.random.Generator, rate: int) -> np.ndarray:
    """The answering machine's tone: 0.2-0.35 s near 1 kHz, faded in and out, then a short silence."""
    t = np.arange(int(rng.uniform(0.2, 0.35) * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(900, 1400) * t) * np.minimum(1, np.minimum(t, t[-1] - t) * 100)
    return np.concatenate([tone, np.zeros(int(0.15 * rate))]).astype(np.float32)


def _traffic(rng: np.random.Generator, rate: int, n: int) -> np.ndarray:
    """Passing cars: low rumble that swells and fades as each goes by."""
    rumble = np.convolve(rng.standard_normal(n), np.ones(rate // 150) / (rate // 150), mode="same")  # below ~150 Hz
    t = np.arange(n) / rate
    swells = sum(np.exp(-(((t - rng.uniform(0, t[-1] + 1e-9)) / rng.uniform(0.5, 1.5)) ** 2)) for _ in range(3))
    return (rumble * (0.2 + swells)).astype(np.float32)


def _drop_packets(rng: np.random.Generator, wave: np.ndarray, rate: int) -> None:
    """Silences 20-80 ms long where an internet call lost its packets, 2-6 of them, in place."""
    for _ in range(int(rng.integers(2, 7))):
        start, size = int(rng.integers(0, len(wave))), int(rng.uniform(0.02, 0.08) * rate)
        wave[start : start + size] = 0.0


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    make: Callable[[Job], list[dict[str, Any]]]
    label_config: str
    tools: tuple[str, ...]
    held_out: bool = False


RECIPES: dict[str, Recipe] = {
    "podcast": Recipe(podcast, PODCAST_CONFIG, ("flite", "sox")),
    "clips": Recipe(clips, CLIPS_CONFIG, ("text2wave", "espeak-ng", "sox")),
    "reviews": Recipe(reviews, REVIEWS_CONFIG, ("espeak-ng", "sox")),
    "calls": Recipe(calls, CALLS_CONFIG, ("flite", "espeak-ng", "text2wave", "sox")),
    "meters": Recipe(meters, METERS_CONFIG, ("flite", "espeak-ng", "text2wave", "sox")),
    "parcels": Recipe(parcels, PARCELS_CONFIG, ("flite", "espeak-ng", "text2wave", "sox"), held_out=True),
}


def _progress(items: list) -> Any:
    return tqdm(items, desc="items", disable=len(items) < 100)


def build(recipe: str, out_dir: Path, n_items: int, seed: int, test_items: int = 0) -> Path:
    """Build one set: media under images/ and audio/, manifest.jsonl, label_config.xml and
    tasks.json (for a Label Studio import) in out_dir. Returns the manifest's path.

    test_items: that many more items, all in the test split, from a second random stream, so the
    first n_items are the same whatever their number (more rare test items, a steadier measure)."""
    if recipe not in RECIPES:
        raise DemoDataError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    if seed < 0:
        raise DemoDataError("the seed must be 0 or more")
    if test_items < 0:
        raise DemoDataError("the number of extra test items must be 0 or more")
    if n_items < MIN_ITEMS:
        raise DemoDataError(f"need at least {MIN_ITEMS} items (each split needs its rare items)")
    spec = RECIPES[recipe]
    _need(spec.tools)
    out_dir = Path(out_dir)
    for sub in ("images", "audio"):
        for stale in (out_dir / sub).glob("item-*"):  # left over from an earlier build
            stale.unlink()
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    records = spec.make(Job(np.random.default_rng(seed), out_dir, n_items))
    if test_items:
        records += spec.make(Job(np.random.default_rng([seed, 1]), out_dir, test_items, n_items, test_only=True))
    if not any((out_dir / "images").iterdir()):
        (out_dir / "images").rmdir()
    # The tasks carry what `broaden simulate` reads (imported here: it brings torch, a build does not need it).
    from backend.lab.simulate import task_data

    config = parse_label_config(spec.label_config)
    tasks = [{"data": task_data(r, config)} for r in records]
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    (out_dir / "tasks.json").write_text(json.dumps(tasks, indent=1))
    (out_dir / "label_config.xml").write_text(spec.label_config, encoding="utf-8")  # choices may not be ASCII
    return manifest


def describe(manifest: Path) -> str:
    """One line: items, test items, and the counts of each control's labels."""
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    counts: dict[str, Counter] = {}
    for r in records:
        for control, value in r["label"].items():
            counts.setdefault(control, Counter()).update([value] if isinstance(value, str) else value)
    labels = "; ".join(f"{c}: " + ", ".join(f"{k} {n}" for k, n in sorted(v.items())) for c, v in counts.items())
    n_test = sum(r["split"] == "test" for r in records)
    return f"{len(records)} items ({n_test} test); {labels}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m backend.lab.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, choices=list(RECIPES), help="which set to build")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the set into")
    parser.add_argument("--items", type=int, default=200, help="number of items (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--test-items", type=int, default=0, help="that many more items, all for testing; --items stay the same"
    )
    args = parser.parse_args(argv)
    try:
        manifest = build(args.recipe, args.out, args.items, args.seed, args.test_items)
    except (BroadenError, OSError) as e:  # a bad option, a missing tool, an unwritable folder: no traceback
        raise SystemExit(f"{parser.prog}: {e}") from None
    log.info("%s: %s", args.recipe, describe(manifest))
    log.info(
        "Import %s into a project set up with %s", manifest.parent / "tasks.json", manifest.parent / "label_config.xml"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
