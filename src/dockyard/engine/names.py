"""Generated container names in Docker's ``adjective_surname`` style."""

from __future__ import annotations

import secrets
from collections.abc import Callable

_LEFT_WORDS = """
    admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold boring brave
    busy charming clever compassionate competent confident cool cranky crazy dazzling determined
    distracted dreamy eager ecstatic elastic elated elegant eloquent epic exciting fervent festive
    flamboyant focused friendly frosty funny gallant gifted goofy gracious great happy hardcore
    heuristic hopeful hungry infallible inspiring intelligent interesting jolly jovial keen kind
    laughing loving lucid magical modest musing mystifying naughty nervous nice nifty nostalgic
    objective optimistic peaceful pedantic pensive practical priceless quirky quizzical recursing
    relaxed reverent romantic sad serene sharp silly sleepy stoic strange stupefied suspicious sweet
    tender thirsty trusting unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial
    youthful zealous zen
"""
_LEFT = tuple(_LEFT_WORDS.split())
_RIGHT_WORDS = """
    agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach bardeen bartik
    bassi bell bhabha bhaskara blackwell bohr booth borg bose brahmagupta brattain brown carson cerf
    chandrasekhar chaplygin chatterjee clarke colden cori cray curie darwin davinci dijkstra dubinsky
    easley edison einstein elion engelbart euclid euler faraday fermat fermi feynman franklin galileo
    gates goldberg goldstine golick goodall hamilton hawking heisenberg hermann hodgkin hoover hopper
    hugle hypatia jackson jang jennings jepsen johnson joliot jones kalam kare keller kepler khorana
    kilby kirch knuth kowalevski lalande lamarr lamport leakey leavitt lewin lichterman liskov lovelace
    lumiere mahavira margulis mayer mccarthy mcclintock meitner mendel merkle mirzakhani morse napier
    nash neumann newton nobel noether northcutt noyce panini pare pascal pasteur perlman pike poincare
    ptolemy raman ramanujan ride ritchie roentgen rosalind saha sammet shamir shannon shaw shirley
    shockley sinoussi snyder spence stonebraker sutherland swanson swartz tesla thompson torvalds turing
    varahamihira villani volhard wescoff wilbur wiles williams wilson wing wozniak wright yalow yonath
"""
_RIGHT = tuple(_RIGHT_WORDS.split())


def generate_name(taken: Callable[[str], bool]) -> str:
    """A free ``/adjective_surname`` (a digit is appended after collisions, as Docker does)."""
    for attempt in range(10):
        name = f"/{secrets.choice(_LEFT)}_{secrets.choice(_RIGHT)}"
        if attempt:
            name += str(secrets.randbelow(10))
        if not taken(name):
            return name
    return f"/{secrets.choice(_LEFT)}_{secrets.token_hex(4)}"
