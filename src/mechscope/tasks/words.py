"""Word pools the synthetic tasks draw from.

Tasks keep only the words that the tokenizer encodes as one token with a leading space
(`single_token_words`), so answers are single tokens and clean/corrupt prompts align.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# Parameter names of the docstring task: common identifiers (ACDC drew from such a list).
PARAM_NAMES = """
name value key data path file files size count index item items result results text line lines
node nodes parent child children root tree left right start end stop step offset length width
height depth level limit max min total number target source dest src dst args kwargs options
config settings params param mode flags flag state status error errors message msg code type
kind label labels title header headers body content payload buffer stream reader writer handle
socket host port address url uri query request response session user users group groups owner
token tokens prefix suffix pattern regex match matches format fmt encoding errors timeout delay
interval seconds minutes hours date time timestamp year month day week page pages row rows col
column columns table tables field fields record records entry entries module modules package
func callback handler hook hooks event events signal signals task tasks job jobs queue worker
workers pool thread threads lock process parser token_type context scope env environment default
defaults cache store db conn cursor commit branch version release tag tags id ids uid name_map
mapping keys values pairs seq sequence array matrix vector shape dims axis weights bias loss
grad rate alpha beta gamma delta epsilon sigma mean std var seed random sample samples batch
chunk chunks block blocks frame frames image images color colors font style widget window
parent_id child_id new old first last next prev current other base copy clone link links
""".split()

# One-word descriptions in docstrings and function names.
DESC_WORDS = """
oil column piece crime population unit dark sector gap message tree detail mine project target
image update light river stone glass paper water metal wood plant animal engine market price
money bank credit trade law court judge rule order power energy force field wave sound voice
music song story book letter word page chapter city town village road street bridge tower wall
door window floor roof garden forest mountain valley island ocean coast desert storm cloud rain
snow wind fire heat cold summer winter spring autumn morning evening night week month year
history science nature culture society family friend child parent teacher student doctor worker
farmer soldier leader member player artist writer reader driver pilot captain king queen horse
bird fish dog cat mouse lion tiger bear wolf fox rabbit snake eagle sheep cow pig chicken apple
bread cheese coffee tea milk sugar salt rice corn bean fruit flower grass seed leaf root army
camp gate path lake hill port ship boat train plane car truck wheel machine tool knife
""".split()

FUNCTION_NAMES = """
get set run load save read write open close parse build make create update delete remove add
check validate convert format render draw send receive fetch store find search sort filter merge
split join apply reset start stop init setup process handle compute transform encode decode
compress extract register dispatch emit notify
""".split()

PERSON_NAMES = """
Mary John Alice Bob James Sarah Tom Anna David Emma Paul Laura Mark Kate Peter Lucy Mike Jane
Adam Rose Ryan Amy Sam Lisa Dan Helen Jack Grace Ben Claire Max Nina Leo Eva Tim Sophie Carl
Julia Eric Diana
""".split()

PLACES = """
store park school office station market garden beach library hospital restaurant
""".split()
OBJECTS = """
book ball key letter ring drink bag gift hat pen map coin apple box
""".split()


def single_token_words(
    tokenizer: PreTrainedTokenizerBase, words: list[str], bare: bool = False
) -> list[str]:
    """The words (deduplicated, in order) that encode as exactly one token after a space.

    With `bare`, the word must also be one token without the space (e.g. after an opening quote).
    """
    seen: set[str] = set()
    out = []
    for w in words:
        if w in seen:
            continue
        seen.add(w)
        forms = [" " + w, w] if bare else [" " + w]
        if all(len(tokenizer.encode(f, add_special_tokens=False)) == 1 for f in forms):
            out.append(w)
    return out
