"""Synthetic, varied English feedback for a mobility app (ideas and critiques), for load benchmarks.

``generate_posts(n, seed)`` is deterministic and sequential: the first 10,000 posts of a 100,000-post
corpus are the 10,000-post corpus of the same seed. Every post carries a ``need`` key (the slots that
carry its meaning), used to build plausible duplicate clusters without running the grouping job.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

GENERATOR_VERSION = "1"

# fmt: off
MODES = [
    "e-scooter", "scooter", "e-bike", "bike", "cargo bike", "moped", "car sharing", "taxi", "ride-hailing",
    "bus", "tram", "metro", "train", "ferry", "on-demand shuttle", "carpool", "night bus", "regional train",
]
VEHICLES = ["scooter", "e-bike", "bike", "moped", "car", "cargo bike", "van", "taxi", "shuttle"]
SCREENS = [
    "map", "trip history", "wallet", "checkout", "home screen", "ride summary", "ticket screen",
    "account settings", "notification centre", "route planner", "search bar", "favourites list",
    "receipts page", "onboarding", "support chat", "profile page", "station list", "parking finder",
    "subscription page", "trip planner", "payment methods page", "live tracking view", "vehicle detail card",
]
PLATFORMS = [
    "Android", "iOS", "the iPhone 12", "Samsung phones", "Android 14", "iOS 18", "tablets", "the web app",
    "Pixel phones", "older Android phones", "the Apple Watch app", "Android Auto", "CarPlay",
]
CITIES = [
    "Madrid", "Barcelona", "Lisbon", "Berlin", "Munich", "Paris", "Lyon", "Milan", "Rotterdam", "Vienna",
    "Warsaw", "Prague", "Copenhagen", "Brussels", "Dublin", "Valencia", "Seville", "Porto", "Zurich", "Oslo",
]
AREAS = [
    "the city centre", "the old town", "the airport", "the university campus", "the train station",
    "residential streets", "the business district", "the harbour", "the suburbs", "pedestrian zones",
]
USERS = [
    "students", "families", "seniors", "commuters", "tourists", "wheelchair users", "parents with strollers",
    "night shift workers", "business travellers", "teenagers", "people with visual impairments",
    "company employees", "first-time riders", "delivery riders",
]
PAYMENTS = [
    "Apple Pay", "Google Pay", "PayPal", "Bizum", "SEPA direct debit", "company credit cards", "gift cards",
    "cash at partner shops", "Klarna", "prepaid balance", "meal vouchers", "corporate invoices",
]
TIMES = [
    "at night", "during rush hour", "on weekends", "in the rain", "early in the morning", "on public holidays",
    "during big events", "in winter", "after midnight", "at peak times",
]
LINES = ["line 3 bus", "tram 7", "metro line 2", "airport express", "night bus N4", "the S1 train", "ferry route B"]
COMPETITORS = ["Citymapper", "Google Maps", "Bolt", "Lime", "Uber", "Moovit", "Free Now", "Tier", "Cabify"]
LOGINS = ["Google", "Apple ID", "Facebook", "email and password", "SMS codes", "the company SSO"]
DURATIONS = ["two weeks", "a month", "ten days", "three weeks", "forever", "more than a week"]
FREQUENCIES = ["every day", "twice a week", "most weekends", "for my daily commute", "a few times a month"]
PURPOSES = [
    "get to work", "drop the kids at school", "go to the gym", "reach the train station", "visit my parents",
    "go shopping", "get home after a night out", "travel between offices", "explore the city as a tourist",
]
PROBLEM_ADJ = [
    "very slow", "confusing", "hard to read", "cluttered", "broken", "unusable with one hand",
    "too small on big phones", "not translated", "always empty", "out of date", "inaccessible with a screen reader",
]
CRASH_CONTEXTS = [
    "I end a ride", "I add a new card", "I open it offline", "I switch to dark mode", "I rotate the phone",
    "I scan the QR code", "I search for an address", "I tap on a station", "the ride is longer than an hour",
    "I change the language", "I log out", "I upload a photo of a damaged vehicle",
]

# Ideas: (action phrase, topic key). The topic key is what the request is about.
ACTIONS = [
    ("export my trip history as a CSV file", "export-history"),
    ("download my receipts as PDF for expenses", "receipts-pdf"),
    ("split the fare with friends", "split-fare"),
    ("pay with {payment}", "payment-{payment}"),
    ("unlock a {vehicle} with NFC instead of the QR code", "nfc-unlock"),
    ("plan a trip that combines {mode} and {mode2}", "multimodal"),
    ("pause my {vehicle} rental without ending it", "pause-rental"),
    ("add a stop to my {mode} ride", "add-stop"),
    ("choose a quieter route with fewer cars", "quiet-route"),
    ("report a damaged {vehicle} with a photo", "report-damage"),
    ("set a monthly spending limit", "budget"),
    ("share my live location with family during a ride", "share-location"),
    ("buy a day pass for the whole family", "family-pass"),
    ("book a wheelchair accessible {vehicle}", "accessible-booking"),
    ("download offline maps for {city}", "offline-maps"),
    ("see how much CO2 I saved per trip", "co2"),
    ("link my company expense account", "expense-account"),
    ("change the app language to Spanish", "language"),
    ("use the app with very little mobile data", "low-data"),
    ("filter {vehicle}s by battery level", "battery-filter"),
    ("reserve a {vehicle} 30 minutes in advance", "reserve"),
    ("save my home and work addresses", "favourite-places"),
    ("get a reminder before my monthly pass expires", "pass-reminder"),
    ("rate the driver after a {mode} trip", "rate-driver"),
    ("tip the driver in the app", "tips"),
    ("bring my dog on {mode} rides", "pets"),
    ("choose a child seat when booking a {vehicle}", "child-seat"),
    ("see real-time arrivals for the {line}", "realtime"),
    ("get refunds automatically when the {mode} is late", "auto-refund"),
    ("transfer my balance to another account", "balance-transfer"),
    ("see where I can park the {vehicle} in {area}", "parking-zones"),
    ("hide ads in the {screen}", "no-ads"),
    ("log in with {login}", "login-{login}"),
    ("use a student discount on {mode} trips", "student-discount"),
    ("invite friends and get free rides", "referral"),
    ("lock the {vehicle} for a short stop", "short-lock"),
    ("see the ride price before I unlock the {vehicle}", "upfront-price"),
    ("schedule a {mode} ride for tomorrow morning", "schedule-ride"),
    ("set up a family account with one payment method", "family-account"),
    ("turn off marketing notifications", "notification-settings"),
    ("pay for parking from the app", "parking-payment"),
    ("top up my transit card with my phone", "card-topup"),
    ("see elevator outages at {line} stations", "elevator-status"),
    ("compare {mode} and {mode2} prices for the same trip", "price-compare"),
    ("get an invoice with my company VAT number", "vat-invoice"),
    ("keep the screen on during navigation", "screen-on"),
    ("rent a {vehicle} for a whole weekend", "long-rental"),
    ("use one ticket for {mode} and {mode2}", "integrated-ticket"),
    ("see how crowded the {mode} is before boarding", "crowding"),
    ("choose which {vehicle} to unlock from the map", "pick-vehicle"),
    ("receive the receipt by email after every ride", "email-receipt"),
    ("add a second payment method as backup", "backup-payment"),
    ("share a {vehicle} with a friend on one account", "shared-rental"),
    ("end my ride outside the zone for a small fee", "out-of-zone"),
    ("see accessible entrances on the {screen}", "accessible-entrances"),
    ("get a warning when the {vehicle} battery is low", "battery-warning"),
    ("block a user who harassed me", "block-user"),
    ("save routes that avoid hills", "avoid-hills"),
    ("mute sounds when unlocking the {vehicle}", "mute-sounds"),
    ("pay for a friend's {mode} ticket", "gift-ticket"),
]
FEATURES = [
    ("dark mode", "dark-mode"),
    ("a home screen widget", "widget"),
    ("larger text and a high contrast mode", "accessibility-text"),
    ("voice guidance for {mode} routes", "voice-guidance"),
    ("step-free routes", "step-free"),
    ("a monthly subscription for {mode}", "subscription"),
    ("group rides for up to four people", "group-ride"),
    ("a lost and found form", "lost-found"),
    ("live crowding info for the {line}", "crowding"),
    ("a helmet selfie check", "helmet"),
    ("bike lanes on the map", "bike-lanes"),
    ("an Apple Watch app", "watch"),
    ("Android Auto support", "android-auto"),
    ("weather warnings before a {mode} ride", "weather"),
    ("a ride history search", "history-search"),
    ("fare caps for daily travel", "fare-cap"),
    ("night mode routes with well-lit streets", "safe-routes"),
    ("a panic button during rides", "safety-button"),
    ("price alerts for {mode}", "price-alerts"),
    ("a loyalty programme with points", "loyalty"),
    ("a calendar integration for recurring trips", "calendar"),
    ("a commute planner with alerts", "commute-alerts"),
    ("a map layer with charging stations", "charging-layer"),
    ("a kids mode with spending limits", "kids-mode"),
    ("a ride timer on the lock screen", "lock-screen-timer"),
    ("better filters in the {screen}", "filters"),
    ("an offline ticket for {mode} trips", "offline-ticket"),
    ("a pay-as-you-go plan", "payg"),
    ("eco points for choosing {mode}", "eco-points"),
    ("a shortcut to repeat my last trip", "repeat-trip"),
    ("a simpler {screen}", "simplify-{screen}"),
    ("multi-language support in {city}", "languages"),
    ("a QR code scanner that works in the dark", "qr-dark"),
    ("estimated walking time to the nearest {vehicle}", "walk-time"),
    ("a women-only night ride option", "women-night"),
]
IDEA_TEMPLATES = [
    ("Let me {action}", "a"),
    ("Please let me {action}", "a"),
    ("Option to {action}", "a"),
    ("It would be great to {action}", "a"),
    ("Allow {users} to {action}", "a"),
    ("I would like to {action}", "a"),
    ("Make it possible to {action} from the {screen}", "a"),
    ("Add {feature}", "f"),
    ("Add {feature} to the {screen}", "f"),
    ("Please add {feature}", "f"),
    ("Can we get {feature}?", "f"),
    ("{Feature} please", "f"),
    ("{Feature} for {users}", "f"),
    ("{Feature} in {city}", "f"),
    ("We need {feature}", "f"),
]
# Critiques: (template, topic key)
CRITIQUE_TEMPLATES = [
    ("The {screen} is {problem}", "screen-{screen}-{problem}"),
    ("{Screen} crashes when {crash}", "crash-{crash}"),
    ("App crashes on {platform} when {crash}", "crash-{crash}"),
    ("Can't {action_plain} since the last update", "regression-{action_key}"),
    ("{Mode} prices are confusing {time}", "pricing-{mode}"),
    ("I was charged twice for a {mode} ride", "double-charge"),
    ("Charged for a {vehicle} ride I never took", "wrong-charge"),
    ("The {vehicle} I reserved was gone when I arrived", "reservation-gone"),
    ("Map shows {vehicle}s that are not there", "ghost-vehicles"),
    ("Arrival times for the {line} are wrong {time}", "realtime-wrong"),
    ("Too many notifications about promotions", "notification-spam"),
    ("Login with {login} keeps failing", "login-fail-{login}"),
    ("Parking zones for {vehicle}s are unclear in {area}", "parking-zones-unclear"),
    ("My refund took {duration}", "slow-refund"),
    ("GPS jumps around while riding a {vehicle}", "gps"),
    ("Support chat never answers", "support"),
    ("{Vehicle}s in {area} always have a flat battery", "battery-low"),
    ("The app drains my battery on {platform}", "battery-drain"),
    ("No {vehicle}s available {time} in {area}", "availability"),
    ("Ride ended but I was still charged for {duration}", "ride-end-billing"),
    ("The {screen} does not work with a screen reader", "screen-reader"),
    ("Fares went up without any notice", "price-increase"),
]
BODY_SENTENCES = [
    "I use the app {frequency} to {purpose}.",
    "Right now I have to do it by hand, which takes ages.",
    "This would help {users} a lot.",
    "{Competitor} already does this and it works well.",
    "It happens on {platform}.",
    "It is especially bad {time}.",
    "Please consider it for {city} first.",
    "I have been waiting for this for {duration}.",
    "Several friends asked me about it too.",
    "Otherwise the app is great, thanks!",
    "I had to take a taxi instead and it cost me a lot.",
    "I contacted support but nobody replied.",
    "Not a big deal, but it is annoying every single time.",
    "It would make me ride much more often.",
    "Screenshots available if needed.",
]
TAGS = ["app", "payments", "map", "scooters", "bikes", "cars", "public-transport", "accessibility", "pricing",
        "notifications", "account", "safety", "parking", "support", "bug"]


TITLE_PREFIXES = ["Suggestion: ", "Feature request: ", "Idea: ", "Request: ", "Proposal: ", "Quick idea: "]
CRITIQUE_PREFIXES = ["Bug: ", "Problem: ", "Issue: ", "Complaint: ", "Annoying: "]
QUALIFIERS = [
    " in {city}", " on {platform}", " for {users}", " {time}", " for {mode} trips", " in the {screen}",
    " like {competitor} does", " near {area}", " when travelling abroad", " for business trips",
    " for short trips", " without calling support", " in the new version", " for the whole family",
]

# fmt: on


@dataclass(frozen=True)
class SyntheticPost:
    kind: str  # idea | critique
    title: str
    body: str
    need: str  # what it asks for: posts with the same need are plausible duplicates
    tags: tuple[str, ...]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class _Filler:
    """Fills ``{slot}`` placeholders, remembering the chosen values (``{Slot}`` capitalises)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.values: dict[str, str] = {}

    def pick(self, slot: str) -> str:
        rng = self.rng
        if slot not in self.values:
            table = {
                "mode": MODES,
                "mode2": MODES,
                "vehicle": VEHICLES,
                "screen": SCREENS,
                "platform": PLATFORMS,
                "city": CITIES,
                "area": AREAS,
                "users": USERS,
                "payment": PAYMENTS,
                "time": TIMES,
                "line": LINES,
                "competitor": COMPETITORS,
                "login": LOGINS,
                "duration": DURATIONS,
                "frequency": FREQUENCIES,
                "purpose": PURPOSES,
                "problem": PROBLEM_ADJ,
                "crash": CRASH_CONTEXTS,
            }[slot]
            value = rng.choice(table)
            if slot == "mode2":
                while value == self.values.get("mode"):
                    value = rng.choice(table)
            self.values[slot] = value
        return self.values[slot]

    def fill(self, template: str) -> str:
        out, i = [], 0
        while i < len(template):
            j = template.find("{", i)
            if j < 0:
                out.append(template[i:])
                break
            k = template.index("}", j)
            out.append(template[i:j])
            name = template[j + 1 : k]
            if name in ("action", "feature", "action_plain", "action_key"):
                value = self.values[name]
            elif name[:1].isupper():
                lowered = name[:1].lower() + name[1:]
                value = _cap(self.values[lowered] if lowered in ("action", "feature") else self.pick(lowered))
            else:
                value = self.pick(name)
            out.append(value)
            i = k + 1
        return "".join(out)


def _one(rng: random.Random) -> SyntheticPost:
    f = _Filler(rng)
    if rng.random() < 0.7:
        kind = "idea"
        template, slot = rng.choice(IDEA_TEMPLATES)
        if slot == "a":
            action, key = rng.choice(ACTIONS)
            f.values["action"] = f.fill(action)
        else:
            action, key = rng.choice(FEATURES)
            f.values["feature"] = f.fill(action)
        title = f.fill(template)
        need = "idea:" + f.fill(key)
    else:
        kind = "critique"
        template, key = rng.choice(CRITIQUE_TEMPLATES)
        if "{action_plain}" in template:
            action, action_key = rng.choice(ACTIONS)
            f.values["action_plain"] = f.fill(action)
            f.values["action_key"] = action_key
        title = f.fill(template)
        need = "critique:" + f.fill(key)
    for slot in ("mode", "vehicle", "payment", "line", "city", "screen", "users"):
        if slot in f.values:  # only the slots of the title itself so far
            need += "|" + f.values[slot]
            break
    if rng.random() < 0.45:
        title += f.fill(rng.choice(QUALIFIERS))
        if rng.random() < 0.2:
            title += f.fill(rng.choice(QUALIFIERS))
    if rng.random() < 0.15:
        title = rng.choice(TITLE_PREFIXES if kind == "idea" else CRITIQUE_PREFIXES) + title
    r = rng.random()
    if r < 0.12:
        title = title.lower()
    elif r < 0.18 and not title.endswith("?"):
        title += "!"
    elif r < 0.22:
        title = title.rstrip("?!") + ", please"
    n_sentences = rng.choices([0, 1, 2, 3], weights=[35, 30, 25, 10])[0]
    body = " ".join(f.fill(s) for s in rng.sample(BODY_SENTENCES, n_sentences))
    tags = tuple(sorted(set(rng.sample(TAGS, rng.choice([0, 1, 1, 2, 3])))))
    return SyntheticPost(kind=kind, title=title[:160], body=body, need=need, tags=tags)


def generate_posts(n: int, seed: int) -> list[SyntheticPost]:
    rng = random.Random(f"forum-bench-posts-{seed}")
    return [_one(rng) for _ in range(n)]


def generate_queries(n: int, seed: int) -> list[str]:
    """Held-out titles (another random stream than the posts): what users start typing."""
    rng = random.Random(f"forum-bench-queries-{seed}")
    return [_one(rng).title for _ in range(n)]


def typing_prefixes(title: str, rng: random.Random, min_len: int = 3, max_len: int = 60) -> list[str]:
    """The partial titles an as-you-type front end would send while ``title`` is typed (debounced:
    one request every 2 to 6 characters), 3 to 60 characters long."""
    end = min(len(title), max_len)
    if end < min_len:
        return [title]
    out, pos = [], min_len
    while pos < end:
        out.append(title[:pos])
        pos += rng.randint(2, 6)
    out.append(title[:end])
    return out
