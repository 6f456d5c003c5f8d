//! The classic codecs gddcm is compared with (`gddcm rd --codecs`): JPEG, WebP, AVIF and
//! JPEG XL through their reference command-line tools, found at run time on a search path.
//!
//! Each codec has one quality knob ([`Codec::level_name`]: JPEG's and WebP's quality, AVIF's
//! quantizer, JPEG XL's distance), encoder settings chosen for small grayscale images
//! ([`Codec::default_settings`], measured as RESULTS.md says), and the tools' own decoders.
//! Rate is the encoded file's size on disk, nothing subtracted: containers and headers are part
//! of what a user stores, as gddcm's compact container is.
//!
//! Nothing here knows of gddcm's models; [`crate::rd`] puts the curves side by side.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::data::Image;

/// A classic codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Jpeg,
    Webp,
    Avif,
    Jxl,
}

/// A tool that is not on the search path, with the Debian package that has it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{codec}: `{tool}` not found on the search path ({path}); install it with `apt-get install {package}` \
     (Debian package {package})"
)]
pub struct MissingTool {
    pub codec: &'static str,
    pub tool: &'static str,
    pub package: &'static str,
    pub path: String,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Jpeg, Codec::Webp, Codec::Avif, Codec::Jxl];

    /// The name on the command line and in file names.
    pub fn key(self) -> &'static str {
        match self {
            Codec::Jpeg => "jpeg",
            Codec::Webp => "webp",
            Codec::Avif => "avif",
            Codec::Jxl => "jxl",
        }
    }

    /// The name in tables and plots.
    pub fn display_name(self) -> &'static str {
        match self {
            Codec::Jpeg => "JPEG",
            Codec::Webp => "WebP",
            Codec::Avif => "AVIF",
            Codec::Jxl => "JPEG XL",
        }
    }

    /// `jpeg`, `webp`, `avif`, `jxl` (case-insensitive; `jpegxl` and `jpg` too).
    pub fn parse(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Codec::Jpeg),
            "webp" => Some(Codec::Webp),
            "avif" => Some(Codec::Avif),
            "jxl" | "jpegxl" | "jpeg-xl" => Some(Codec::Jxl),
            _ => None,
        }
    }

    /// (encoder, decoder) command names.
    pub fn tools(self) -> (&'static str, &'static str) {
        match self {
            Codec::Jpeg => ("cjpeg", "djpeg"),
            Codec::Webp => ("cwebp", "dwebp"),
            Codec::Avif => ("avifenc", "avifdec"),
            Codec::Jxl => ("cjxl", "djxl"),
        }
    }

    /// The Debian package with both tools.
    pub fn debian_package(self) -> &'static str {
        match self {
            Codec::Jpeg => "libjpeg-turbo-progs",
            Codec::Webp => "webp",
            Codec::Avif => "libavif-bin",
            Codec::Jxl => "libjxl-tools",
        }
    }

    fn extension(self) -> &'static str {
        self.key()
    }

    /// What the quality knob is, and which way is better.
    pub fn level_name(self) -> &'static str {
        match self {
            Codec::Jpeg => "cjpeg -quality (1..100, higher is better)",
            Codec::Webp => "cwebp -q (0..100, higher is better)",
            Codec::Avif => "avifenc --min/--max quantizer (0..63, lower is better; 0 is lossless)",
            Codec::Jxl => "cjxl -d butteraugli distance (0..25, lower is better; 0 is lossless)",
        }
    }

    /// The knob, short, for tables: `-quality`, `-q`, `quantizer`, `-d`.
    pub fn level_flag(self) -> &'static str {
        match self {
            Codec::Jpeg => "-quality",
            Codec::Webp => "-q",
            Codec::Avif => "quantizer",
            Codec::Jxl => "-d",
        }
    }

    /// The levels swept by default, from the lowest rate to the highest.
    pub fn default_levels(self) -> Vec<f64> {
        match self {
            Codec::Jpeg => vec![5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0],
            Codec::Webp => vec![0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0],
            Codec::Avif => vec![63.0, 56.0, 48.0, 40.0, 34.0, 28.0, 22.0, 16.0, 10.0, 5.0, 2.0],
            Codec::Jxl => vec![25.0, 15.0, 10.0, 7.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5, 0.3, 0.15],
        }
    }

    /// Whether a level is in the knob's range.
    pub fn level_in_range(self, level: f64) -> bool {
        level.is_finite()
            && match self {
                Codec::Jpeg => (1.0..=100.0).contains(&level) && level.fract() == 0.0,
                Codec::Webp => (0.0..=100.0).contains(&level),
                Codec::Avif => (0.0..=63.0).contains(&level) && level.fract() == 0.0,
                Codec::Jxl => (0.0..=25.0).contains(&level),
            }
    }

    /// The encoder settings besides the knob, the best of the variants measured on the first
    /// 32 Fashion-MNIST test images (BD-rates against the variant before, RESULTS.md):
    /// - JPEG: arithmetic coding (no Huffman tables to store) with 8-bit quantisation tables
    ///   (`-baseline`; at quality < 25 libjpeg would write 16-bit ones); Huffman `-optimize`
    ///   needs 12% more rate at equal PSNR. Arithmetic-coded JPEG is standard (T.81) and
    ///   libjpeg-turbo decodes it, but web browsers do not.
    /// - WebP: slowest method, one segment (each segment's header costs more than it saves
    ///   on 784 pixels).
    /// - AVIF: slowest speed; gray input is coded 4:0:0 (see `encoder_args`).
    /// - JPEG XL: effort 9, modular mode (VarDCT needs 18% more rate at equal PSNR here).
    pub fn default_settings(self) -> Vec<String> {
        let s: &[&str] = match self {
            Codec::Jpeg => &["-arithmetic", "-baseline"],
            Codec::Webp => &["-m", "6", "-segments", "1"],
            Codec::Avif => &["-s", "0"],
            Codec::Jxl => &["-e", "9", "-m", "1"],
        };
        s.iter().map(|s| s.to_string()).collect()
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// The executable `name` on `search_path` (a `PATH`-style list), if there is one.
pub fn find_tool(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search_path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// A codec whose tools were found, with their versions and the settings it will run with.
#[derive(Debug, Clone, Serialize)]
pub struct CodecTools {
    pub codec: Codec,
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    /// The first line each tool prints for its version.
    pub encoder_version: String,
    pub decoder_version: String,
    /// Encoder arguments besides the knob, the input and the output.
    pub settings: Vec<String>,
}

/// Finds `codec`'s encoder and decoder on `search_path` and asks them their versions; a tool
/// that is missing is a [`MissingTool`] error naming it and its Debian package.
pub fn discover(codec: Codec, search_path: &OsStr) -> Result<CodecTools> {
    let (enc, dec) = codec.tools();
    let find = |tool: &'static str| {
        find_tool(tool, search_path).ok_or_else(|| MissingTool {
            codec: codec.display_name(),
            tool,
            package: codec.debian_package(),
            path: search_path.to_string_lossy().into_owned(),
        })
    };
    let (encoder, decoder) = (find(enc)?, find(dec)?);
    let version_flag = |tool: &str| match tool {
        "cjpeg" | "djpeg" | "cwebp" | "dwebp" => "-version",
        _ => "--version",
    };
    let encoder_version = version_of(&encoder, version_flag(enc))?;
    let decoder_version = version_of(&decoder, version_flag(dec))?;
    Ok(CodecTools { codec, encoder, decoder, encoder_version, decoder_version, settings: codec.default_settings() })
}

/// The first non-empty line a tool prints (stdout, else stderr) for `flag`.
fn version_of(tool: &Path, flag: &str) -> Result<String> {
    let out = Command::new(tool).arg(flag).output().with_context(|| format!("cannot run {}", tool.display()))?;
    let text = [out.stdout, out.stderr].iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>();
    text.iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .with_context(|| format!("{} {flag} printed nothing", tool.display()))
}

/// One image through a codec at one level.
#[derive(Debug, Clone)]
pub struct Coded {
    /// The encoded file as the encoder wrote it (its length is the rate).
    pub file: Vec<u8>,
    /// What the codec's decoder made of it, in the original's channels.
    pub decoded: Image,
    pub encode_s: f64,
    pub decode_s: f64,
}

fn level_text(level: f64) -> String {
    if level.fract() == 0.0 {
        format!("{}", level as i64)
    } else {
        format!("{level}")
    }
}

impl CodecTools {
    /// The encoder's arguments for `level` (input and output last, as each tool takes them).
    fn encoder_args(&self, level: &str, gray: bool, input: &Path, output: &Path) -> Vec<OsString> {
        let l = level;
        let mut a: Vec<OsString> = self.settings.iter().map(OsString::from).collect();
        let mut push = |v: &[&OsStr]| a.extend(v.iter().map(|s| s.to_os_string()));
        match self.codec {
            // A PGM input makes a grayscale JPEG (one component, no chroma tables).
            Codec::Jpeg => {
                push(&["-quality".as_ref(), l.as_ref(), "-outfile".as_ref(), output.as_os_str(), input.as_os_str()])
            }
            Codec::Webp => push(&[
                "-quiet".as_ref(),
                "-q".as_ref(),
                l.as_ref(),
                input.as_os_str(),
                "-o".as_ref(),
                output.as_os_str(),
            ]),
            Codec::Avif => {
                // AV1 monochrome (4:0:0) for gray input: no chroma planes to pay for (unless the
                // settings choose a format).
                if gray && !self.settings.iter().any(|a| a == "--yuv" || a == "-y") {
                    push(&["--yuv".as_ref(), "400".as_ref()]);
                }
                push(&[
                    "--min".as_ref(),
                    l.as_ref(),
                    "--max".as_ref(),
                    l.as_ref(),
                    input.as_os_str(),
                    output.as_os_str(),
                ])
            }
            Codec::Jxl => push(&["-d".as_ref(), l.as_ref(), "--quiet".as_ref(), input.as_os_str(), output.as_os_str()]),
        }
        a
    }

    fn decoder_args(&self, input: &Path, output: &Path) -> Vec<OsString> {
        let v: Vec<&OsStr> = match self.codec {
            Codec::Jpeg => vec!["-pnm".as_ref(), "-outfile".as_ref(), output.as_os_str(), input.as_os_str()],
            // No dithering: it adds noise to trade banding for grain, which no metric here rewards.
            Codec::Webp => {
                vec![input.as_os_str(), "-nodither".as_ref(), "-quiet".as_ref(), "-o".as_ref(), output.as_os_str()]
            }
            Codec::Avif => vec![input.as_os_str(), output.as_os_str()],
            Codec::Jxl => vec![input.as_os_str(), output.as_os_str(), "--quiet".as_ref()],
        };
        v.into_iter().map(OsStr::to_os_string).collect()
    }

    /// The commands run for one image at level `LEVEL`, as text (for the JSON record).
    pub fn command_lines(&self, gray: bool) -> (String, String) {
        let (input, coded, decoded) = self.file_names();
        let show = |tool: &Path, args: Vec<OsString>| {
            let name = tool.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            format!("{name} {}", args.join(" "))
        };
        // LEVEL stands for the swept value.
        let enc = show(&self.encoder, self.encoder_args("LEVEL", gray, Path::new(input), Path::new(&coded)));
        let dec = show(&self.decoder, self.decoder_args(Path::new(&coded), Path::new(decoded)));
        (enc, dec)
    }

    fn file_names(&self) -> (&'static str, String, &'static str) {
        let input = if self.codec == Codec::Jpeg { "in.pgm" } else { "in.png" };
        let decoded = if self.codec == Codec::Jpeg { "out.pgm" } else { "out.png" };
        (input, format!("coded.{}", self.codec.extension()), decoded)
    }

    /// Encodes `image` at `level` in a temporary folder and decodes it with the codec's decoder.
    pub fn code(&self, image: &Image, level: f64) -> Result<Coded> {
        ensure!(
            self.codec.level_in_range(level),
            "{}: level {level} is outside {}",
            self.codec,
            self.codec.level_name()
        );
        let dir =
            tempfile::Builder::new().prefix("gddcm-classic-").tempdir().context("cannot make a temporary folder")?;
        let (input, coded, decoded) = self.file_names();
        let (input, coded, decoded) = (dir.path().join(input), dir.path().join(coded), dir.path().join(decoded));
        write_input(image, &input)?;
        let gray = image.channels == 1;
        let t0 = Instant::now();
        run(&self.encoder, &self.encoder_args(&level_text(level), gray, &input, &coded))?;
        let encode_s = t0.elapsed().as_secs_f64();
        let file = std::fs::read(&coded).with_context(|| format!("{} wrote no file", self.encoder.display()))?;
        let t1 = Instant::now();
        run(&self.decoder, &self.decoder_args(&coded, &decoded))?;
        let decode_s = t1.elapsed().as_secs_f64();
        let out = Image::load(&decoded, image.channels)
            .with_context(|| format!("reading what {} decoded", self.decoder.display()))?;
        ensure!(
            (out.width, out.height) == (image.width, image.height),
            "{} decoded a {}×{} image from a {}×{} one",
            self.decoder.display(),
            out.width,
            out.height,
            image.width,
            image.height
        );
        Ok(Coded { file, decoded: out, encode_s, decode_s })
    }
}

/// PGM/PPM for cjpeg (it reads no PNG), PNG for the others.
fn write_input(image: &Image, path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "pgm") {
        let magic = if image.channels == 1 { "P5" } else { "P6" };
        let mut bytes = format!("{magic}\n{} {}\n255\n", image.width, image.height).into_bytes();
        bytes.extend(image.to_hwc());
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    } else {
        image.save_png(path)
    }
}

fn run(tool: &Path, args: &[OsString]) -> Result<()> {
    let out = Command::new(tool).args(args).output().with_context(|| format!("cannot run {}", tool.display()))?;
    if !out.status.success() {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        bail!(
            "{} {} failed ({}): {}",
            tool.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_it_and_its_package() {
        let empty = tempfile::tempdir().unwrap();
        for codec in Codec::ALL {
            let e = discover(codec, empty.path().as_os_str()).unwrap_err();
            let missing = e.downcast_ref::<MissingTool>().expect("a MissingTool error");
            assert_eq!((missing.tool, missing.package), (codec.tools().0, codec.debian_package()));
            let text = e.to_string();
            assert!(
                text.contains(codec.tools().0) && text.contains(&format!("apt-get install {}", codec.debian_package())),
                "{text}"
            );
        }
    }

    #[test]
    fn only_executable_files_are_tools() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("cjpeg");
        std::fs::write(&plain, "not a program").unwrap();
        std::fs::create_dir(dir.path().join("djpeg")).unwrap();
        assert_eq!(find_tool("cjpeg", dir.path().as_os_str()), None);
        assert_eq!(find_tool("djpeg", dir.path().as_os_str()), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
            let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
            assert_eq!(find_tool("cjpeg", &path), Some(plain));
        }
    }

    #[test]
    fn names_and_levels() {
        assert_eq!(Codec::parse("JPEGXL"), Some(Codec::Jxl));
        assert_eq!(Codec::parse("png"), None);
        for c in Codec::ALL {
            assert_eq!(Codec::parse(c.key()), Some(c));
            assert!(c.default_levels().iter().all(|&l| c.level_in_range(l)), "{c}");
        }
        assert!(!Codec::Jpeg.level_in_range(0.0) && !Codec::Jpeg.level_in_range(50.5));
        assert!(!Codec::Avif.level_in_range(64.0) && !Codec::Jxl.level_in_range(f64::NAN));
    }
}
