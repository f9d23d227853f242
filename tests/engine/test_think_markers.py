"""Thinking markers read from chat templates (pure), and the embedded model's (none: the default)."""

import pytest

from ponderd.engine.markers import DEFAULT, think_markers
from ponderd.engine.sample import SampleState

QWEN3 = (
    "{%- if '</think>' in content %}{%- set reasoning_content = content.split('</think>')[0] %}{%- endif %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and "
    "enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
R1 = "{% if ns.is_first %}{{'<｜Assistant｜><think>\\n'}}{% endif %}{% set content = content.split('</think>')[-1] %}"
STRIP_ONLY = "{% set content = message['content'].split('</reasoning>')[-1] %}"
COMMAND_R = "{{ '<|START_THINKING|>' }}{{ thoughts }}{{ '<|END_THINKING|>' }}"
CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}"


@pytest.mark.parametrize(
    "template, markers",
    [
        (QWEN3, ("<think>", "</think>")),
        (R1, ("<think>", "</think>")),
        ("<thinking>{{ t }}</thinking>", ("<thinking>", "</thinking>")),
        (STRIP_ONLY, ("<reasoning>", "</reasoning>")),
        (COMMAND_R, ("<|START_THINKING|>", "<|END_THINKING|>")),
        (CHATML, None),
        ("", None),
        (None, None),
    ],
)
def test_markers_from_a_template(template, markers):
    assert think_markers(template) == markers


def test_a_sample_recognises_its_models_closing_marker():
    st = SampleState(0, 50, 10, (9,), close_tag="</thinking>")
    for piece in (b"hmm", b" </think", b"ing>"):
        st.accept(1, piece, False)
    assert st.phase == "answer"
    for piece in (b"4", b"</thinking>", b"2"):
        st.accept(1, piece, False)
    st.accept(2, b"", True)
    assert (st.result.thinking, st.result.text) == ("hmm", "42")


@pytest.mark.model
def test_the_embedded_models_template_names_none_so_the_default_is_used():
    from ponderd.engine.llama import LlamaEngine
    from ponderd.settings import ModelSettings

    e = LlamaEngine(ModelSettings(n_ctx=512, n_seq_max=1), max_queue=1)
    e.start()
    try:
        assert think_markers(e.template_text) is None
        assert e.markers == DEFAULT
        assert e.prepare("", "Hi").open_thinking == e.tokenize("<think>\n")
    finally:
        e.close()
