"""The corpus: the Nano JSONL line FunASR trains on, and every way nano8k reads, writes and checks it.

One module a concern, each data format with one writer and one parser:

* `manifest`  the Nano JSONL line: its fields, the one writer (`manifest.record`) and the one
              parser (`manifest.parse`), `speech_length` (`fbank_frames`), `text_length`
              (`count_tokens`), the prompt (`decoding_prompt`).
* `text`      reading text files: UTF-8 with or without BOM, UTF-16 detected, transcripts cleaned.
* `audio`     the one audio loader: formats (WAV, FLAC, raw telephony), headers, samples,
              segment cuts, channels, non-finite samples, pipes.
* `sources`   what users hand over (Kaldi directory, JSONL, CSV/TSV, folder, list, one file) read
              into one entry type, with one path rule.
* `problems`  the reports and their reject records.
* `preparing` sources -> Nano JSONL (`nano8k data prepare`).
* `checking`  what FunASR will do with a Nano JSONL (`nano8k data check`, and `nano8k train`).

torch, funasr and transformers are imported inside functions: the CLI imports this package.
The names below are the package's public interface (`from nano8k import data; data.prepare(...)`).
"""

from nano8k.data.audio import (
                               AUDIO_SUFFIXES,
                               CLIP_FRACTION,
                               RAW_FORMATS,
                               SILENCE_DBFS,
                               AudioProblem,
                               nearest_sample,
                               nonfinite_samples,
                               resolve_path,
)
from nano8k.data.checking import (
                               CHECK_CACHE_FORMAT,
                               DEFAULTS,
                               RULES,
                               check,
                               check_cached,
                               check_key,
                               check_list_file,
                               default_cache_dir,
)
from nano8k.data.manifest import (
                               LINE_FIELDS,
                               DEFAULT_FRONTEND_FS,
                               DEFAULT_PROMPT,
                               DEFAULT_SYSTEM,
                               LANGUAGES,
                               SPEECH_BEGIN,
                               SPEECH_END,
                               TELEPHONE_FS,
                               audio_paths,
                               count_tokens,
                               decoding_prompt,
                               funasr_language,
                               fake_token_len,
                               fbank_frames,
                               load_tokenizer,
                               resampled_length,
)
from nano8k.data.preparing import SEGMENT_TOLERANCE, prepare
from nano8k.data.problems import (
                               EFFECTS,
                               PREPARE_REASONS,
                               REMOVING,
                               CheckReport,
                               PrepareReport,
                               Problem,
                               check_notes_path,
                               check_rejects_path,
                               rejects_path,
                               write_notes,
                               write_rejects,
)
from nano8k.data.sources import (
                               CHANNEL_MODES,
                               Entry,
                               KaldiRow,
                               RewrittenAudio,
                               audio_files,
                               audio_root_hint,
                               folder_key,
                               read_keyed,
                               read_reco2file_and_channel,
                               read_source,
                               readable_audio,
                               SOURCE_FORMATS,
                               WRITE_FORMATS,
                               write_corpus,
                               write_kaldi,
)
from nano8k.data.text import SCORING_LANGUAGES, read_lines, read_text, undecodable
from nano8k.files import atomic_path, write_jsonl_atomic, write_lines_atomic

__all__ = [
    "AUDIO_SUFFIXES", "KaldiRow", "RewrittenAudio", "write_corpus", "write_kaldi", "audio_root_hint", "LINE_FIELDS", "CHANNEL_MODES", "CHECK_CACHE_FORMAT", "CLIP_FRACTION", "DEFAULTS",
    "DEFAULT_FRONTEND_FS", "DEFAULT_PROMPT", "DEFAULT_SYSTEM", "EFFECTS", "LANGUAGES", "PREPARE_REASONS",
    "RAW_FORMATS", "REMOVING", "RULES", "SEGMENT_TOLERANCE", "SILENCE_DBFS", "SPEECH_BEGIN", "SPEECH_END",
    "TELEPHONE_FS", "AudioProblem", "CheckReport", "Entry", "PrepareReport", "Problem", "atomic_path", "audio_files",
    "audio_paths", "check", "check_cached", "check_key", "check_list_file", "check_notes_path", "check_rejects_path",
    "count_tokens", "decoding_prompt", "funasr_language", "default_cache_dir", "fake_token_len", "fbank_frames", "folder_key",
    "load_tokenizer", "nearest_sample", "nonfinite_samples", "prepare", "read_keyed", "read_lines", "read_source",
    "readable_audio", "SOURCE_FORMATS", "WRITE_FORMATS", "SCORING_LANGUAGES",
    "read_reco2file_and_channel", "read_text", "undecodable", "rejects_path", "resampled_length", "resolve_path", "write_jsonl_atomic", "write_lines_atomic",
    "write_notes", "write_rejects",
]
