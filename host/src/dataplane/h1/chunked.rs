//! Where a chunked body ends (RFC 9112 §7.1), found while its bytes pass
//! through unchanged: sizes, extensions and trailers are checked, not
//! rewritten. Lines end in CRLF only; a bare LF or CR is refused, as are
//! sizes past 2^60 and overlong size lines or trailers.

/// Longest chunk-size line (size and extensions) taken.
const MAX_LINE: usize = 4096;
/// Most trailer bytes taken.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: digits read so far, and the size.
    Size { digits: u8, size: u64 },
    /// After the size: whitespace, then `;` extensions or the CR.
    AfterSize { size: u64 },
    /// In the extensions, up to the CR.
    Extension { size: u64 },
    /// The CR of the size line is in; its LF must follow.
    SizeLf { size: u64 },
    /// Chunk data still to pass.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer line, up to its CR.
    Trailer,
    TrailerLf,
    /// The final line's CR is in; its LF ends the body.
    EndLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// Bytes of the current size line, and of the trailers.
    line: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked { state: State::Size { digits: 0, size: 0 }, line: 0, trailers: 0 }
    }
}

impl Chunked {
    /// Takes what of `bytes` belongs to the body: how many bytes, and
    /// whether the body ended there (the rest belongs to what follows).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let n = left.min((bytes.len() - i) as u64);
                i += n as usize;
                self.state = if left == n { State::DataCr } else { State::Data(left - n) };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                return Ok((i, true));
            }
        }
        Ok((i, self.state == State::Done))
    }

    fn step(&mut self, b: u8) -> Result<State, &'static str> {
        if matches!(self.state, State::Size { .. } | State::AfterSize { .. } | State::Extension { .. } | State::SizeLf { .. }) {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err("a chunk size line is too long");
            }
        }
        if matches!(self.state, State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf) {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err("the chunked trailers are too long");
            }
        }
        Ok(match self.state {
            State::Size { digits, size } => match (b as char).to_digit(16) {
                Some(d) if digits < 15 => State::Size { digits: digits + 1, size: size << 4 | u64::from(d) },
                Some(_) => return Err("a chunk size is too large"),
                None if digits == 0 => return Err("a chunk size is not hexadecimal"),
                None => return self.after_size(size, b),
            },
            State::AfterSize { size } => self.after_size(size, b)?,
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::Extension { size },
                _ => return Err("a chunk extension holds a control character"),
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err("a chunk size line does not end in CRLF");
                }
                self.line = 0;
                if size == 0 { State::TrailerStart } else { State::Data(size) }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { digits: 0, size: 0 },
            State::DataCr | State::DataLf => return Err("a chunk's data is not followed by CRLF"),
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart | State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err("a trailer line does not end in CRLF"),
                _ => State::Trailer,
            },
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return Err("a trailer line does not end in CRLF"),
            State::Data(_) | State::Done => unreachable!("data is taken in bulk, and nothing after the end"),
        })
    }

    fn after_size(&self, size: u64, b: u8) -> Result<State, &'static str> {
        Ok(match b {
            b' ' | b'\t' => State::AfterSize { size },
            b';' => State::Extension { size },
            b'\r' => State::SizeLf { size },
            _ => return Err("a chunk size is followed by something else than an extension"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<(usize, bool), &'static str> {
        Chunked::default().feed(body)
    }

    #[test]
    fn the_end_is_found_however_the_bytes_arrive() {
        let body = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(whole(body), Ok((end, true)));
        // A byte at a time, and in two uneven halves.
        for split in [1, 7, 20] {
            let mut c = Chunked::default();
            let mut taken = 0;
            let mut done = false;
            for part in body[..end].chunks(split) {
                assert!(!done);
                let (n, d) = c.feed(part).unwrap();
                taken += n;
                done = d;
            }
            assert_eq!((taken, done), (end, true), "split {split}");
        }
        assert_eq!(whole(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(whole(b"3\r\nab"), Ok((5, false)));
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"1000000000000000\r\n",
            b"0\r\nx-trailer: 1\n\r\n",
            b"0\r\n\rx",
            b"5 x\r\n",
            b"5;\x01\r\n",
        ] {
            assert!(whole(bad).is_err(), "{:?} was taken", String::from_utf8_lossy(bad));
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE], b"\r\n"].concat();
        assert_eq!(whole(&long), Err("a chunk size line is too long"));
    }
}
