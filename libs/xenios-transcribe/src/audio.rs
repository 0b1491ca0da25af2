//! Audio formats told from the bytes, and durations read from their headers, so a limit can
//! be enforced before anything is sent to a provider. Every reader bounds-checks: a
//! truncated or hostile header gives `None`, never a panic.

use serde::{Deserialize, Serialize};

/// A container both providers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// RIFF/RF64 WAVE.
    Wav,
    /// MPEG audio (layer I–III), with or without an ID3v2 tag.
    Mp3,
    Flac,
    /// Ogg (Vorbis, Opus, FLAC).
    Ogg,
    /// WebM or Matroska (EBML).
    WebM,
    /// ISO base media: MP4, M4A, MOV.
    Mp4,
}

impl AudioFormat {
    pub fn mime_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Flac => "audio/flac",
            AudioFormat::Ogg => "audio/ogg",
            AudioFormat::WebM => "audio/webm",
            AudioFormat::Mp4 => "audio/mp4",
        }
    }

    /// The file extension OpenAI-compatible servers tell the format by.
    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Flac => "flac",
            AudioFormat::Ogg => "ogg",
            AudioFormat::WebM => "webm",
            AudioFormat::Mp4 => "m4a",
        }
    }
}

/// Major brands of ISO base media files that hold still images (HEIF and HEIC, as phones take
/// photos, and AVIF), not sound.
const IMAGE_BRANDS: [&[u8]; 12] = [
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1",
    b"avif", b"avis",
];

/// The format of `bytes` by its signature, or `None` when it is none of [`AudioFormat`].
pub fn sniff_audio(bytes: &[u8]) -> Option<AudioFormat> {
    let riff = matches!(bytes.get(..4), Some(b"RIFF" | b"RF64" | b"BW64"));
    if riff && bytes.get(8..12) == Some(b"WAVE") {
        return Some(AudioFormat::Wav);
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        let photo = bytes
            .get(8..12)
            .is_some_and(|brand| IMAGE_BRANDS.contains(&brand));
        return (!photo).then_some(AudioFormat::Mp4);
    }
    let rest = skip_id3v2(bytes);
    if rest.starts_with(b"fLaC") {
        Some(AudioFormat::Flac)
    } else if rest.starts_with(b"OggS") {
        Some(AudioFormat::Ogg)
    } else if rest.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(AudioFormat::WebM)
    } else if rest.len() < bytes.len() || mpeg_stream_start(rest).is_some() {
        // An ID3v2 tag is an MP3's; else two consecutive frame headers.
        Some(AudioFormat::Mp3)
    } else {
        None
    }
}

/// The duration in seconds as the headers tell it, or `None` when they do not (a stream
/// recorded live, a truncated header). Exact for WAV, FLAC, MP4, WebM, Ogg and VBR MP3 with
/// a Xing/Info/VBRI header; estimated from the bitrate for other MP3.
pub fn estimate_duration(bytes: &[u8], format: AudioFormat) -> Option<f64> {
    let seconds = match format {
        AudioFormat::Wav => wav_duration(bytes),
        AudioFormat::Mp3 => mp3_duration(bytes),
        AudioFormat::Flac => flac_duration(bytes),
        AudioFormat::Ogg => ogg_duration(bytes),
        AudioFormat::WebM => webm_duration(bytes),
        AudioFormat::Mp4 => mp4_duration(bytes),
    }?;
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// `n` bytes at `at`; offsets come from the input, so even the addition is checked.
fn bytes_at(b: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(n)?)
}
fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    bytes_at(b, at, N)?.try_into().ok()
}
fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    array_at(b, at).map(u16::from_le_bytes)
}
fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_le_bytes)
}
fn u64_le(b: &[u8], at: usize) -> Option<u64> {
    array_at(b, at).map(u64::from_le_bytes)
}
fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_be_bytes)
}
fn u64_be(b: &[u8], at: usize) -> Option<u64> {
    array_at(b, at).map(u64::from_be_bytes)
}

fn wav_duration(b: &[u8]) -> Option<f64> {
    let mut pos = 12usize;
    let mut byte_rate = None;
    while let (Some(id), Some(size)) = (bytes_at(b, pos, 4), u32_le(b, pos.saturating_add(4))) {
        let body = pos + 8;
        match id {
            b"fmt " => byte_rate = u32_le(b, body + 8).filter(|&r| r > 0),
            b"data" => {
                let available = b.len() - body;
                // 0 and 0xFFFFFFFF are what streaming writers and RF64 put there.
                let size = match size {
                    0 | u32::MAX => available,
                    n => (n as usize).min(available),
                };
                return Some(size as f64 / f64::from(byte_rate?));
            }
            _ => {}
        }
        pos = body.checked_add(size as usize + (size as usize & 1))?;
    }
    None
}

fn flac_duration(bytes: &[u8]) -> Option<f64> {
    let b = skip_id3v2(bytes);
    // STREAMINFO is always the first metadata block (type 0).
    if b.get(4)? & 0x7F != 0 {
        return None;
    }
    let (rate, samples) = flac_streaminfo(b.get(8..)?)?;
    (samples > 0).then(|| samples as f64 / f64::from(rate))
}

/// `(sample rate, total samples)` from a FLAC STREAMINFO block body.
fn flac_streaminfo(info: &[u8]) -> Option<(u32, u64)> {
    let d = info.get(..18)?;
    let rate = (u32::from(d[10]) << 12) | (u32::from(d[11]) << 4) | (u32::from(d[12]) >> 4);
    let samples = (u64::from(d[13] & 0x0F) << 32) | u64::from(u32_be(d, 14)?);
    (rate > 0).then_some((rate, samples))
}

fn skip_id3v2(mut b: &[u8]) -> &[u8] {
    while b.starts_with(b"ID3") {
        let Some(h) = b.get(..10) else { return &[] };
        let size = h[6..10]
            .iter()
            .fold(0usize, |acc, &x| (acc << 7) | usize::from(x & 0x7F));
        let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
        b = b.get(10 + size + footer..).unwrap_or_default();
    }
    b
}

struct MpegFrame {
    bitrate: u32,
    sample_rate: u32,
    samples: u32,
    len: usize,
    /// Where a Xing/Info header would start, from the frame's start.
    xing_offset: usize,
}

fn mpeg_frame(b: &[u8]) -> Option<MpegFrame> {
    const BITRATES: [[u32; 14]; 5] = [
        [
            32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
        [
            32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        [
            32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
        [
            32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
        [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let h = b.get(..4)?;
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    // version: 0 MPEG-2.5, 2 MPEG-2, 3 MPEG-1; layer: 1 III, 2 II, 3 I.
    let (version, layer) = ((h[1] >> 3) & 3, (h[1] >> 1) & 3);
    let (bitrate_index, rate_index) = (usize::from(h[2] >> 4), usize::from((h[2] >> 2) & 3));
    if version == 1 || layer == 0 || !(1..15).contains(&bitrate_index) || rate_index == 3 {
        return None;
    }
    let mpeg1 = version == 3;
    let table = match (mpeg1, layer) {
        (true, 3) => 0,
        (true, 2) => 1,
        (true, _) => 2,
        (false, 3) => 3,
        (false, _) => 4,
    };
    let bitrate = BITRATES[table][bitrate_index - 1] * 1000;
    let sample_rate = match version {
        3 => [44100, 48000, 32000][rate_index],
        2 => [22050, 24000, 16000][rate_index],
        _ => [11025, 12000, 8000][rate_index],
    };
    let samples = match (layer, mpeg1) {
        (3, _) => 384,
        (2, _) | (1, true) => 1152,
        _ => 576,
    };
    let padding = u32::from((h[2] >> 1) & 1);
    let len = if layer == 3 {
        (12 * bitrate / sample_rate + padding) * 4
    } else {
        samples / 8 * bitrate / sample_rate + padding
    };
    let mono = h[3] >> 6 == 3;
    let side_info = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    Some(MpegFrame {
        bitrate,
        sample_rate,
        samples,
        len: len as usize,
        xing_offset: 4 + side_info,
    })
}

/// The first frame of an MPEG audio stream: a valid header followed by another valid header
/// where the first frame ends (or by the end of the bytes).
fn mpeg_stream_start(b: &[u8]) -> Option<(usize, MpegFrame)> {
    (0..b.len().min(4096)).find_map(|at| {
        let frame = mpeg_frame(&b[at..])?;
        let next = at + frame.len;
        (next >= b.len() || mpeg_frame(&b[next..]).is_some()).then_some((at, frame))
    })
}

fn mp3_duration(bytes: &[u8]) -> Option<f64> {
    let b = skip_id3v2(bytes);
    let (start, frame) = mpeg_stream_start(b)?;
    let b = &b[start..];
    let per_frame = f64::from(frame.samples) / f64::from(frame.sample_rate);
    let xing = frame.xing_offset;
    if matches!(b.get(xing..xing + 4), Some(b"Xing" | b"Info")) {
        let flags = u32_be(b, xing + 4)?;
        if flags & 1 != 0 {
            return Some(f64::from(u32_be(b, xing + 8)?) * per_frame);
        }
    }
    if b.get(36..40) == Some(b"VBRI") {
        return Some(f64::from(u32_be(b, 36 + 14)?) * per_frame);
    }
    let id3v1 = if b.len() >= 128 && b[b.len() - 128..].starts_with(b"TAG") {
        128
    } else {
        0
    };
    Some((b.len() - id3v1) as f64 * 8.0 / f64::from(frame.bitrate))
}

fn ogg_duration(b: &[u8]) -> Option<f64> {
    let serial = u32_le(b, 14)?;
    let segments = usize::from(*b.get(26)?);
    let packet = b.get(27 + segments..)?;
    let (rate, pre_skip) = if packet.starts_with(b"OpusHead") {
        (48_000, u64::from(u16_le(packet, 10)?))
    } else if packet.starts_with(b"\x01vorbis") {
        (u32_le(packet, 12)?, 0)
    } else if packet.starts_with(b"\x7fFLAC") {
        (flac_streaminfo(packet.get(17..)?)?.0, 0)
    } else {
        return None;
    };
    if rate == 0 {
        return None;
    }
    // The last page of this stream that ends a packet holds the total sample count.
    let tail_start = b.len().saturating_sub(256 * 1024);
    let mut end = b.len();
    while let Some(at) = b[tail_start..end].windows(4).rposition(|w| w == b"OggS") {
        let page = tail_start + at;
        let granule = u64_le(b, page + 6);
        if b.get(page + 4) == Some(&0) && u32_le(b, page + 14) == Some(serial) {
            if let Some(granule) = granule.filter(|&g| g != u64::MAX) {
                return Some(granule.saturating_sub(pre_skip) as f64 / f64::from(rate));
            }
        }
        end = page;
    }
    None
}

/// The body of the first box of type `kind` among `data`'s top-level boxes.
fn mp4_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut pos = 0usize;
    while data.len().saturating_sub(pos) >= 8 {
        let (size, header) = match u32_be(data, pos)? {
            0 => (data.len() - pos, 8),
            1 => (usize::try_from(u64_be(data, pos + 8)?).ok()?, 16),
            n => (n as usize, 8),
        };
        if size < header {
            return None;
        }
        let end = pos.checked_add(size)?;
        if bytes_at(data, pos + 4, 4)? == kind {
            return data.get(pos + header..end.min(data.len()));
        }
        pos = end;
    }
    None
}

fn mp4_duration(b: &[u8]) -> Option<f64> {
    let mvhd = mp4_box(mp4_box(b, b"moov")?, b"mvhd")?;
    let (timescale, duration) = match mvhd.first()? {
        0 => (u32_be(mvhd, 12)?, u64::from(u32_be(mvhd, 16)?).into()),
        1 => (u32_be(mvhd, 20)?, u64_be(mvhd, 24)),
        _ => return None,
    };
    let duration = duration.filter(|&d| d != u64::MAX && d != u64::from(u32::MAX))?;
    (timescale > 0).then(|| duration as f64 / f64::from(timescale))
}

/// An EBML variable-length integer at `pos`: (value without the length marker, length).
/// Unknown sizes (all value bits set) come back as `u64::MAX`.
fn ebml_vint(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    let first = *b.get(pos)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for &byte in bytes_at(b, pos.checked_add(1)?, len - 1)? {
        value = (value << 8) | u64::from(byte);
    }
    let unknown = value == (1u64 << (7 * len)) - 1;
    Some((if unknown { u64::MAX } else { value }, len))
}

/// An element header at `pos`: (id with its marker, data start, data size).
fn ebml_element(b: &[u8], pos: usize) -> Option<(u64, usize, u64)> {
    let first = *b.get(pos)?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return None;
    }
    let id = bytes_at(b, pos, id_len)?
        .iter()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let (size, size_len) = ebml_vint(b, pos + id_len)?;
    Some((id, pos + id_len + size_len, size))
}

fn webm_duration(b: &[u8]) -> Option<f64> {
    const SEGMENT: u64 = 0x1853_8067;
    const INFO: u64 = 0x1549_A966;
    const CLUSTER: u64 = 0x1F43_B675;
    const TIMECODE_SCALE: u64 = 0x2A_D7B1;
    const DURATION: u64 = 0x4489;

    let (_, header_start, header_size) = ebml_element(b, 0)?;
    let (id, mut pos, _) = ebml_element(b, header_start.checked_add(header_size as usize)?)?;
    if id != SEGMENT {
        return None;
    }
    // Info precedes the clusters; an element of unknown size cannot be skipped.
    loop {
        let (id, start, size) = ebml_element(b, pos)?;
        if id == CLUSTER || size == u64::MAX {
            return None;
        }
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        if id == INFO {
            let info = b.get(start..end.min(b.len()))?;
            let (mut scale, mut duration) = (1_000_000u64, None);
            let mut at = 0;
            while let Some((id, start, size)) = ebml_element(info, at) {
                let data = bytes_at(info, start, usize::try_from(size).ok()?)?;
                match (id, data.len()) {
                    (TIMECODE_SCALE, 1..=8) => {
                        scale = data.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x));
                    }
                    (DURATION, 4) => {
                        duration = Some(f64::from(f32::from_be_bytes(data.try_into().ok()?)));
                    }
                    (DURATION, 8) => duration = Some(f64::from_be_bytes(data.try_into().ok()?)),
                    _ => {}
                }
                at = start + data.len();
            }
            return duration.map(|d| d * scale as f64 / 1e9);
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCM WAV file of `seconds` of silence.
    fn wav(seconds: f64, sample_rate: u32, channels: u16) -> Vec<u8> {
        let block_align = channels * 2;
        let data_len = (seconds * f64::from(sample_rate)) as u32 * u32::from(block_align);
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&sample_rate.to_le_bytes());
        b.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
        b.extend_from_slice(&block_align.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b.resize(b.len() + data_len as usize, 0);
        b
    }

    fn flac(rate: u32, samples: u64) -> Vec<u8> {
        let mut b = b"fLaC".to_vec();
        b.extend_from_slice(&[0x80, 0, 0, 34]);
        let mut info = [0u8; 34];
        info[10] = (rate >> 12) as u8;
        info[11] = (rate >> 4) as u8;
        info[12] = ((rate & 0xF) << 4) as u8 | 0x02; // + channels bits
        info[13] = 0xF0 | ((samples >> 32) & 0x0F) as u8;
        info[14..18].copy_from_slice(&(samples as u32).to_be_bytes());
        b.extend_from_slice(&info);
        b
    }

    fn ogg_page(serial: u32, granule: u64, packet: &[u8]) -> Vec<u8> {
        let mut b = b"OggS".to_vec();
        b.push(0);
        b.push(0);
        b.extend_from_slice(&granule.to_le_bytes());
        b.extend_from_slice(&serial.to_le_bytes());
        b.extend_from_slice(&[0; 8]); // sequence, checksum
        b.push(1);
        b.push(packet.len() as u8);
        b.extend_from_slice(packet);
        b
    }

    fn mp4(timescale: u32, duration: u32) -> Vec<u8> {
        let mut mvhd = vec![0u8; 4 + 4 + 4];
        mvhd.extend_from_slice(&timescale.to_be_bytes());
        mvhd.extend_from_slice(&duration.to_be_bytes());
        mvhd.resize(100, 0);
        let boxed = |kind: &[u8], body: &[u8]| {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        };
        let mut b = boxed(b"ftyp", b"M4A \0\0\0\0isomM4A ");
        b.extend(boxed(b"mdat", &[0; 64]));
        b.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
        b
    }

    fn webm(duration_ms: f64) -> Vec<u8> {
        let mut info = vec![0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]; // scale 1 ms
        info.extend_from_slice(&[0x44, 0x89, 0x88]);
        info.extend_from_slice(&duration_ms.to_be_bytes());
        let mut segment = vec![0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8];
        segment.extend(info);
        segment.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0xFF]); // a live cluster
        let mut b = vec![0x1A, 0x45, 0xDF, 0xA3, 0x84, 0x42, 0x82, 0x81, 0x77];
        b.extend_from_slice(&[
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend(segment);
        b
    }

    /// MPEG-1 layer III, 128 kb/s, 44.1 kHz, stereo, `frames` frames of 417 bytes.
    fn mp3(frames: usize) -> Vec<u8> {
        let mut frame = vec![0xFF, 0xFB, 0x90, 0x00];
        frame.resize(417, 0);
        let mut b = b"ID3\x04\0\0\0\0\0\x05hello".to_vec();
        for _ in 0..frames {
            b.extend_from_slice(&frame);
        }
        b
    }

    #[test]
    fn sniffs_each_format() {
        assert_eq!(sniff_audio(&wav(0.1, 8000, 1)), Some(AudioFormat::Wav));
        assert_eq!(sniff_audio(&flac(44100, 1)), Some(AudioFormat::Flac));
        assert_eq!(
            sniff_audio(&ogg_page(1, 0, b"OpusHead")),
            Some(AudioFormat::Ogg)
        );
        assert_eq!(sniff_audio(&webm(1.0)), Some(AudioFormat::WebM));
        assert_eq!(sniff_audio(&mp4(1000, 1)), Some(AudioFormat::Mp4));
        assert_eq!(sniff_audio(&mp3(3)), Some(AudioFormat::Mp3));
        assert_eq!(sniff_audio(&mp3(3)[15..]), Some(AudioFormat::Mp3));
        for junk in [
            &b""[..],
            b"%PDF-1.7",
            b"PK\x03\x04",
            b"\xFF\xFB\x90",
            b"hello world",
            // A phone's HEIC photo and an AVIF image: ISO base media, but no sound.
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
            b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf",
        ] {
            assert_eq!(sniff_audio(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn reads_durations_from_headers() {
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("a duration");
            assert!((got - want).abs() < 0.01, "{got} != {want}");
        };
        let wav_file = wav(2.5, 16000, 2);
        close(estimate_duration(&wav_file, AudioFormat::Wav), 2.5);
        // A truncated upload is as long as what arrived.
        close(
            estimate_duration(&wav_file[..44 + 32000], AudioFormat::Wav),
            0.5,
        );
        close(
            estimate_duration(&flac(48000, 48000 * 90), AudioFormat::Flac),
            90.0,
        );
        close(
            estimate_duration(&mp4(600, 600 * 75), AudioFormat::Mp4),
            75.0,
        );
        close(
            estimate_duration(&webm(12_345.0), AudioFormat::WebM),
            12.345,
        );
        let mut opus = ogg_page(7, 0, b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0");
        opus.extend(ogg_page(9, 999_999_999, b"other stream"));
        opus.extend(ogg_page(7, 48_000 * 30 + 312, b"audio"));
        close(estimate_duration(&opus, AudioFormat::Ogg), 30.0);
        // 100 frames of 1152 samples at 44.1 kHz.
        close(
            estimate_duration(&mp3(100), AudioFormat::Mp3),
            100.0 * 1152.0 / 44100.0,
        );
    }

    #[test]
    fn unknown_durations_are_none() {
        assert_eq!(estimate_duration(&flac(44100, 0), AudioFormat::Flac), None);
        assert_eq!(
            estimate_duration(&ogg_page(1, 0, b"OpusHead"), AudioFormat::Ogg),
            None
        );
        assert_eq!(
            estimate_duration(b"RIFF\0\0\0\0WAVE", AudioFormat::Wav),
            None
        );
    }

    #[test]
    fn never_panics_on_random_bytes_behind_real_signatures() {
        let prefixes: [&[u8]; 9] = [
            b"RIFF\0\0\0\0WAVE",
            b"fLaC",
            b"OggS",
            &[0x1A, 0x45, 0xDF, 0xA3],
            b"\0\0\0\x20ftyp",
            b"ID3\x04\0\0\0\0\0\0",
            &[0xFF, 0xFB, 0x90, 0x00],
            b"",
            b"\0\0\0\x01moov",
        ];
        // xorshift: deterministic, so a failure can be replayed.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = prefixes[round % prefixes.len()].to_vec();
            let len = (next() % 512) as usize;
            // Mostly small values and 0xFF runs: the edge cases of sizes and varints.
            bytes.extend((0..len).map(|_| match next() % 4 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            }));
            sniff_audio(&bytes);
            for format in [
                AudioFormat::Wav,
                AudioFormat::Mp3,
                AudioFormat::Flac,
                AudioFormat::Ogg,
                AudioFormat::WebM,
                AudioFormat::Mp4,
            ] {
                if let Some(d) = estimate_duration(&bytes, format) {
                    assert!(d.is_finite() && d >= 0.0, "{format:?} {d}");
                }
            }
        }
    }

    #[test]
    fn never_panics_on_truncated_or_garbled_headers() {
        let samples = [
            wav(0.2, 8000, 1),
            flac(44100, 441),
            mp4(1000, 5000),
            webm(5000.0),
            mp3(4),
            ogg_page(1, 0, b"\x01vorbis\0\0\0\0\0\x44\xac\0\0"),
        ];
        for sample in &samples {
            for cut in 0..sample.len().min(200) {
                let mut bytes = sample[..cut].to_vec();
                if let Some(format) = sniff_audio(&bytes) {
                    estimate_duration(&bytes, format);
                }
                for i in (0..bytes.len()).step_by(3) {
                    bytes[i] = 0xFF;
                }
                if let Some(format) = sniff_audio(&bytes) {
                    estimate_duration(&bytes, format);
                }
                for format in [
                    AudioFormat::Wav,
                    AudioFormat::Mp3,
                    AudioFormat::Flac,
                    AudioFormat::Ogg,
                    AudioFormat::WebM,
                    AudioFormat::Mp4,
                ] {
                    estimate_duration(&sample[..cut], format);
                }
            }
        }
    }
}
