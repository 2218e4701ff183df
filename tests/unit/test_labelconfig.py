import pytest

from backend.errors import UnsupportedConfig
from backend.labelstudio.labelconfig import parse_label_config

DEMO = open("label_config.xml").read()


def test_demo_config_reads_every_object_and_control():
    cfg = parse_label_config(DEMO)
    assert [(o.name, o.modality, o.value_key) for o in cfg.objects] == [
        ("image", "image", "image"),
        ("caption", "text", "caption"),
        ("voiceover", "audio", "audio"),
    ]
    assert [(c.name, c.to_name, c.multiple) for c in cfg.controls] == [
        ("category", "image", False),
        ("policy", "voiceover", False),
    ]
    assert cfg.controls[1].labels == ("OK", "Violation")


def test_multiple_choice_alias_hypertext_and_url_text():
    cfg = parse_label_config("""
    <View>
      <HyperText name="page" value="$html"/>
      <Text name="doc" value="$doc_url" valueType="url"/>
      <AudioPlus name="clip" value="$wav"/>
      <Choices name="tags" toName="page" choice="multiple">
        <Choice value="Spam" alias="spam"/><Choice value="Scam"/><Choice value="Scam"/>
      </Choices>
    </View>""")
    assert {o.modality for o in cfg.objects} == {"text", "audio"}
    assert [o.text_is_url for o in cfg.objects if o.modality == "text"] == [False, True]
    (tags,) = cfg.controls
    assert tags.multiple and tags.labels == ("spam", "Scam")  # alias wins, duplicates dropped


def test_fingerprint_changes_with_labels_not_with_layout():
    a = parse_label_config(
        '<View><Text name="t" value="$t"/><Choices name="c" toName="t">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    b = parse_label_config(
        '<View><Header value="hi"/><Text name="t" value="$t"/><Choices name="c" toName="t">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    c = parse_label_config(
        '<View><Text name="t" value="$t"/><Choices name="c" toName="t">'
        '<Choice value="a"/><Choice value="x"/></Choices></View>'
    )
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.parametrize(
    "xml, words",
    [
        ("", "empty"),
        ("<View><Image name='i' value='$i'/>", "not valid XML"),
        (
            "<View><Image name='i' value='$i'/><RectangleLabels name='l' toName='i'><Label value='a'/>"
            "</RectangleLabels></View>",
            "needs a <Choices>",
        ),
        (
            "<View><Video name='v' value='$v'/><Choices name='c' toName='v'><Choice value='a'/>"
            "<Choice value='b'/></Choices></View>",
            "no object broaden can read",
        ),
        (
            "<View><Image name='i' value='$i'/><Choices name='c' toName='nothere'><Choice value='a'/>"
            "<Choice value='b'/></Choices></View>",
            "toName",
        ),
        (
            "<View><Image name='i' value='$i'/><Choices name='c' toName='i' perRegion='true'>"
            "<Choice value='a'/><Choice value='b'/></Choices></View>",
            "perRegion",
        ),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><View>&a;</View>', "not valid XML"),
    ],
)
def test_unsupported_configs_say_why(xml, words):
    with pytest.raises(UnsupportedConfig, match=words):
        parse_label_config(xml)
