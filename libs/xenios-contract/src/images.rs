//! Pictures a user message shows the model, as OpenAI's `image_url` parts carry them: a public
//! http(s) URL that the provider fetches, or the picture itself as a base64 `data:` URL; or, in
//! a job's input, an upload (`file_id`) that the consumer reads and sends inline. Both providers
//! take PNG, JPEG, GIF and WebP.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::inputs::{InputError, MAX_URL_LEN};

/// Per request, counting every message: each is sent again with every later turn.
pub const MAX_IMAGES: usize = 20;
/// An uploaded picture's largest size: Anthropic's limit per picture.
pub const MAX_UPLOADED_IMAGE_BYTES: u64 = 5 << 20;
/// All of a request's uploaded pictures together, so that a request read into memory and sent
/// as base64 stays within Anthropic's 32 MB request limit.
pub const MAX_UPLOADED_IMAGES_BYTES: u64 = 20 << 20;
/// The picture types both providers take.
pub const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// A picture as a job's input names it: by URL, or by the `file_id` of an upload
/// (`POST /api/v1/files`), one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

impl ImageInput {
    /// The picture, when it is given by URL; an upload must be read first (see
    /// [`Image::inline`]).
    pub fn by_url(&self) -> Option<Image> {
        self.url.as_ref().map(|url| Image {
            url: url.clone(),
            detail: self.detail,
        })
    }

    /// One of `url` and `file_id`; an error names the field at fault under `at`.
    fn check(&self, at: &str) -> Result<(), InputError> {
        match (&self.url, &self.file_id) {
            (Some(url), None) => {
                check_url(url).map_err(|message| InputError::new(&format!("{at}.url"), message))
            }
            (None, Some(id)) if id.is_empty() || id.len() > 128 => Err(InputError::new(
                &format!("{at}.file_id"),
                "must be 1 to 128 characters",
            )),
            (None, Some(_)) => Ok(()),
            _ => Err(InputError::new(
                at,
                "give exactly one of `url` and `file_id`",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// `https://…`, `http://…` or `data:image/<png|jpeg|gif|webp>;base64,…`.
    pub url: String,
    /// OpenAI's resolution hint; Anthropic has none and is not sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDetail {
    Auto,
    Low,
    High,
}

/// Where a provider gets the picture from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource<'a> {
    Url(&'a str),
    /// `media_type` is the one the bytes show, whatever the URL declared: Anthropic refuses a
    /// picture whose declared type is not its own, and clients often mislabel.
    Inline {
        media_type: &'static str,
        base64: &'a str,
    },
}

impl Image {
    /// The picture's source; an error says what is wrong with the URL.
    pub fn source(&self) -> Result<ImageSource<'_>, String> {
        source_of(&self.url)
    }

    /// An upload's bytes as an inline picture, or why they are none.
    pub fn inline(bytes: &[u8], detail: Option<ImageDetail>) -> Result<Image, String> {
        let media_type = image_type(bytes).ok_or_else(not_a_picture)?;
        Ok(Image {
            url: format!("data:{media_type};base64,{}", STANDARD.encode(bytes)),
            detail,
        })
    }

    /// The whole URL checked: an inline picture's data decoded, not only its first bytes.
    pub fn check(&self) -> Result<(), String> {
        check_url(&self.url)
    }
}

/// The source a URL gives; an error says what is wrong with it.
fn source_of(url: &str) -> Result<ImageSource<'_>, String> {
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        return match scheme.as_deref() {
            Some("https" | "http") if url.len() <= MAX_URL_LEN => Ok(ImageSource::Url(url)),
            Some("https" | "http") => Err(format!("at most {MAX_URL_LEN} characters")),
            _ => Err("an http(s) URL or a base64 `data:image/…` URL".into()),
        };
    };
    let Some((declared, base64)) = rest.split_once(";base64,") else {
        return Err("a `data:` URL must be base64 (`data:image/png;base64,…`)".into());
    };
    if !IMAGE_TYPES.contains(&declared) {
        return Err(format!(
            "`{declared}` is not a supported picture type ({})",
            IMAGE_TYPES.join(", ")
        ));
    }
    let media_type = media_type_of(base64)?;
    Ok(ImageSource::Inline { media_type, base64 })
}

/// The whole URL checked: an inline picture's data decoded, not only its first bytes.
fn check_url(url: &str) -> Result<(), String> {
    if let ImageSource::Inline { base64, .. } = source_of(url)? {
        STANDARD
            .decode(base64)
            .map_err(|e| format!("the picture's base64 does not decode: {e}"))?;
    }
    Ok(())
}

/// At most [`MAX_IMAGES`] in all, each given by a URL [`Image::source`] takes or by an upload;
/// `at` is the message's field.
pub(crate) fn check_images<'a>(
    messages: impl IntoIterator<Item = (String, &'a [ImageInput])>,
) -> Result<(), InputError> {
    let mut count = 0;
    for (at, images) in messages {
        for (j, image) in images.iter().enumerate() {
            count += 1;
            if count > MAX_IMAGES {
                return Err(InputError::new(
                    &format!("{at}.images"),
                    format!("at most {MAX_IMAGES} pictures per request"),
                ));
            }
            image.check(&format!("{at}.images[{j}]"))?;
        }
    }
    Ok(())
}

const SIGNATURES: [(&[u8], &str); 5] = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xFF\xD8\xFF", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF", "image/webp"),
];

/// One of [`IMAGE_TYPES`], by the bytes' signature.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    let webp = bytes.get(8..12) == Some(b"WEBP".as_slice());
    SIGNATURES
        .iter()
        .find(|(signature, media_type)| {
            bytes.starts_with(signature) && (*media_type != "image/webp" || webp)
        })
        .map(|(_, media_type)| *media_type)
}

fn not_a_picture() -> String {
    format!("not a picture of {}", IMAGE_TYPES.join(", "))
}

/// The picture's type by its signature, from the first 16 base64 characters (12 bytes).
fn media_type_of(base64: &str) -> Result<&'static str, String> {
    let head = base64.get(..16).unwrap_or(base64);
    let bytes = STANDARD
        .decode(head)
        .map_err(|e| format!("the picture's base64 does not decode: {e}"))?;
    image_type(&bytes).ok_or_else(not_a_picture)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01";

    fn by_url(image: &Image) -> ImageInput {
        ImageInput {
            url: Some(image.url.clone()),
            file_id: None,
            detail: image.detail,
        }
    }

    fn data_url(declared: &str, bytes: &[u8]) -> Image {
        Image {
            url: format!("data:{declared};base64,{}", STANDARD.encode(bytes)),
            detail: None,
        }
    }

    #[test]
    fn urls_pass_through_and_inline_pictures_say_what_they_are() {
        let remote = Image {
            url: "https://example.com/cat.png".into(),
            detail: Some(ImageDetail::Low),
        };
        assert_eq!(
            remote.source(),
            Ok(ImageSource::Url("https://example.com/cat.png"))
        );
        let png = data_url("image/png", PNG);
        assert!(matches!(
            png.source(),
            Ok(ImageSource::Inline {
                media_type: "image/png",
                ..
            })
        ));
        // Mislabelled: the bytes win.
        let labelled_png = data_url("image/png", JPEG);
        assert!(matches!(
            labelled_png.source(),
            Ok(ImageSource::Inline {
                media_type: "image/jpeg",
                ..
            })
        ));
        let webp = data_url("image/webp", b"RIFF\x10\0\0\0WEBPVP8 ");
        assert!(matches!(
            webp.source(),
            Ok(ImageSource::Inline {
                media_type: "image/webp",
                ..
            })
        ));
        let upload = ImageInput {
            url: None,
            file_id: Some("f1".into()),
            detail: None,
        };
        let inputs = [by_url(&remote), by_url(&png), upload];
        assert!(check_images([("input.messages[0]".to_owned(), inputs.as_slice())]).is_ok());
        // An upload's bytes go out inline, typed by what they are.
        let read = Image::inline(JPEG, Some(ImageDetail::High)).unwrap();
        assert_eq!(
            read.url,
            format!("data:image/jpeg;base64,{}", STANDARD.encode(JPEG))
        );
        assert_eq!(read.detail, Some(ImageDetail::High));
        assert!(Image::inline(b"%PDF-1.7", None).is_err());
    }

    #[test]
    fn bad_pictures_are_refused_naming_the_field() {
        let field = |image: ImageInput| {
            check_images([("input.messages[1]".to_owned(), [image].as_slice())])
                .unwrap_err()
                .field
        };
        for bad in [
            Image {
                url: "ftp://example.com/cat.png".into(),
                detail: None,
            },
            Image {
                url: "file:///etc/passwd".into(),
                detail: None,
            },
            Image {
                url: format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)),
                detail: None,
            },
            Image {
                url: "data:image/png,rawbytes".into(),
                detail: None,
            },
            data_url("image/tiff", PNG),
            data_url("image/png", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            data_url("image/webp", b"RIFF\x10\0\0\0WAVEfmt "),
            Image {
                url: format!("data:image/png;base64,{}!!!!", STANDARD.encode(PNG)),
                detail: None,
            },
        ] {
            assert_eq!(
                field(by_url(&bad)),
                "input.messages[1].images[0].url",
                "{bad:?}"
            );
        }
        let (neither, mut both) = (
            ImageInput {
                url: None,
                file_id: None,
                detail: None,
            },
            by_url(&data_url("image/png", PNG)),
        );
        both.file_id = Some("f1".into());
        assert_eq!(field(neither), "input.messages[1].images[0]");
        assert_eq!(field(both), "input.messages[1].images[0]");
        let mut unnamed = by_url(&data_url("image/png", PNG));
        (unnamed.url, unnamed.file_id) = (None, Some(String::new()));
        assert_eq!(field(unnamed), "input.messages[1].images[0].file_id");
        let many = vec![by_url(&data_url("image/png", PNG)); MAX_IMAGES + 1];
        let error = check_images([("input.messages[0]".to_owned(), many.as_slice())]).unwrap_err();
        assert_eq!(error.field, "input.messages[0].images");
    }
}
