from espnet2_almtok.recipe.lm_data import serves


def test_music_and_sounds_serve_captioning_and_speech_serves_asr_tts():
    assert serves("asr", "speech") and serves("tts", "speech") and not serves("caption", "speech")
    for cat in ("sound", "music"):
        assert serves("caption", cat) and not serves("asr", cat) and not serves("tts", cat)
