"""speechrnn.core.readme: a command's table written between its marker lines, the rest byte for byte."""

import pytest

from speechrnn.core.errors import SpeechRNNError
from speechrnn.core.readme import markers, with_table, write_readme

BEGIN, END = markers("ablation")


def test_readme_gets_the_table_between_its_markers_and_the_rest_byte_for_byte(tmp_path):
    before, after = "# Title\r\n\ntext ± é\n" + BEGIN, END + "\n\nmore\n"
    readme = tmp_path / "README.md"
    readme.write_bytes(f"{before}\nan old table\nof two lines\n{after}".encode())
    write_readme(str(readme), "| new | table |", "ablation")
    assert readme.read_bytes() == f"{before}\n| new | table |\n{after}".encode()
    write_readme(str(readme), "again", "ablation")
    assert readme.read_bytes() == f"{before}\nagain\n{after}".encode()
    other = markers("footprint")
    with pytest.raises(SpeechRNNError, match=other[0]):  # each section has its own markers
        write_readme(str(readme), "elsewhere", "footprint")
    assert readme.read_bytes() == f"{before}\nagain\n{after}".encode()


def test_two_sections_are_written_each_between_its_own_markers():
    text = f"a\n{BEGIN}\nold\n{END}\nb\n<!-- footprint:begin -->\nold\n<!-- footprint:end -->\nc\n"
    text = with_table(with_table(text, "T1", "R", "ablation"), "T2", "R", "footprint")
    assert text == f"a\n{BEGIN}\nT1\n{END}\nb\n<!-- footprint:begin -->\nT2\n<!-- footprint:end -->\nc\n"
