import unicodedata

from maple_utils import config, registry
from maple_utils.data import languages
from maple_utils.embedded.tokenizer import corpus
from maple_utils.eval.tasks import load_task

SCRIPT_SAMPLES = {  # a Unicode name fragment each script's letters carry
    "Latn": "LATIN",
    "Arab": "ARABIC",
    "Cyrl": "CYRILLIC",
    "Grek": "GREEK",
    "Deva": "DEVANAGARI",
    "Thai": "THAI",
    "Hans": "CJK",
    "Jpan": "HIRAGANA",
    "Hang": "HANGUL",
    "Hebr": "HEBREW",
    "Taml": "TAMIL",
    "Mymr": "MYANMAR",
    "Sinh": "SINHALA",
}


def test_table_has_the_41_languages_with_unique_codes():
    table = languages.table()
    assert len(table) == 41
    assert {"en", "zh", "sw", "qu", "my", "si"} <= set(table)


def test_groups_follow_the_dataset_definitions():
    datasets = registry.read("datasets")["datasets"]
    g1 = set(datasets["multialpaca"]["languages"])
    g2 = set(datasets["bactrian-x-22"]["languages"]) - g1
    assert len(g1) == 11 and len(g2) == 11
    assert set(datasets["bactrian-x-11"]["languages"]) == g1
    for code, lang in languages.table().items():
        expected = "G1" if code in g1 else "G2" if code in g2 else "G3"
        assert lang.group == expected, code


def test_dataset_columns_agree_with_dataset_language_lists():
    datasets = registry.read("datasets")["datasets"]
    assert set(languages.supporting("multialpaca")) == set(datasets["multialpaca"]["languages"])
    assert set(datasets["bactrian-x-22"]["languages"]) <= set(languages.supporting("bactrian_x"))


def test_task_language_counts_match_megaverse_lists():
    # mission_anchors.md 6.1: XNLI 15, XCOPA 11 (+ English COPA), XQuAD 12, MLQA 7
    counts = {t: len(load_task(t).languages()) for t in list(config.known_tasks())}
    assert counts["xnli"] == 15 and counts["xcopa"] == 12 and counts["xquad"] == 12 and counts["mlqa"] == 7
    assert counts["belebele"] == 40  # all but Quechua
    assert set(list(config.known_tasks())) == {"xnli", "xcopa", "belebele", "xquad", "mlqa", "xlsum"}


def test_bundled_corpus_is_written_in_each_languages_script():
    sentences = corpus()
    for code, lang in languages.table().items():
        text = "".join(sentences[code])
        names = [unicodedata.name(ch, "") for ch in text if ch.isalpha()]
        assert any(SCRIPT_SAMPLES[lang.script] in n for n in names), (code, lang.script)
