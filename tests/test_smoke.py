import resnetzoo


def test_every_registered_name_builds():
    assert len(resnetzoo.list_models()) == 10
