//! The lexer of Go's text/template (`lex.go`): text, actions, trim markers, comments.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tok {
    Text,
    LeftDelim,
    RightDelim,
    Space,
    Bool,
    CharConstant,
    Number,
    String,
    RawString,
    Identifier,
    Field,
    Variable,
    Dot,
    Nil,
    Pipe,
    LeftParen,
    RightParen,
    Assign,
    Declare,
    Char,
    // keywords
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Template,
    With,
    Eof,
}

#[derive(Clone, Debug)]
pub struct Item {
    pub tok: Tok,
    pub pos: usize,
    pub val: String,
}

/// A lexing error: message and byte offset.
#[derive(Debug)]
pub struct LexError {
    pub pos: usize,
    pub message: String,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub fn lex(input: &str) -> Result<Vec<Item>, LexError> {
    let mut l = Lexer {
        input,
        pos: 0,
        items: Vec::new(),
        paren_depth: 0,
    };
    l.run()?;
    Ok(l.items)
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    items: Vec<Item>,
    paren_depth: i32,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn emit(&mut self, tok: Tok, start: usize, val: &str) {
        self.items.push(Item {
            tok,
            pos: start,
            val: val.to_string(),
        });
    }
    fn err<T>(&self, pos: usize, msg: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            pos,
            message: msg.into(),
        })
    }

    fn run(&mut self) -> Result<(), LexError> {
        let mut trim_next_text = false;
        loop {
            // text
            let start = self.pos;
            let idx = self.rest().find(LEFT).map(|i| self.pos + i);
            let text_end = idx.unwrap_or(self.input.len());
            let mut text = &self.input[start..text_end];
            if trim_next_text {
                text = text.trim_start_matches(is_space);
            }
            let text_start = text_end - text.len();
            let Some(delim_pos) = idx else {
                if !text.is_empty() {
                    self.emit(Tok::Text, text_start, text);
                }
                self.emit(Tok::Eof, self.input.len(), "");
                return Ok(());
            };
            // left trim marker: "{{- " (dash followed by space)
            let after = &self.input[delim_pos + 2..];
            let left_trim = after.starts_with('-') && after[1..].starts_with(is_space);
            if left_trim {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.emit(Tok::Text, text_start, text);
            }
            self.pos = delim_pos + 2;
            if left_trim {
                self.pos += 1;
            }
            // comment? (exactly "{{/*" or "{{- /*")
            let comment_start = if left_trim {
                delim_pos + 4
            } else {
                delim_pos + 2
            };
            if self
                .input
                .get(comment_start..)
                .is_some_and(|s| s.starts_with("/*"))
            {
                let Some(end) = self.input[comment_start..].find("*/") else {
                    return self.err(delim_pos, "unclosed comment");
                };
                let p = comment_start + end + 2;
                let r = &self.input[p..];
                let right_trim = r.starts_with(is_space) && r[1..].starts_with("-}}");
                if right_trim {
                    self.pos = p + 4;
                } else if r.starts_with(RIGHT) {
                    self.pos = p + 2;
                } else {
                    return self.err(delim_pos, "comment ends before closing delimiter");
                }
                trim_next_text = right_trim;
                continue;
            }
            self.emit(Tok::LeftDelim, delim_pos, LEFT);
            self.paren_depth = 0;
            trim_next_text = self.inside_action(delim_pos)?;
        }
    }

    /// Lexes one action; returns whether it ended with a right trim marker.
    fn inside_action(&mut self, action_start: usize) -> Result<bool, LexError> {
        loop {
            let r = self.rest();
            // right delimiter, possibly with trim marker " -}}"
            if let Some(stripped) = r
                .strip_prefix(' ')
                .or_else(|| r.strip_prefix('\t'))
                .or_else(|| r.strip_prefix('\n'))
                .or_else(|| r.strip_prefix('\r'))
                && stripped.starts_with("-}}")
            {
                if self.paren_depth > 0 {
                    return self.err(self.pos, "unclosed left paren");
                }
                let p = self.pos + 2;
                self.emit(Tok::RightDelim, p, RIGHT);
                self.pos = p + 2;
                return Ok(true);
            }
            if r.starts_with(RIGHT) {
                if self.paren_depth > 0 {
                    return self.err(self.pos, "unclosed left paren");
                }
                self.emit(Tok::RightDelim, self.pos, RIGHT);
                self.pos += 2;
                return Ok(false);
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                return self.err(action_start, "unclosed action");
            };
            if is_space(c) {
                let n = r.len() - r.trim_start_matches(is_space).len();
                // don't swallow the space before " -}}"
                let mut n = n;
                if r[n..].starts_with("-}}") && n > 0 {
                    n -= 1;
                }
                if n == 0 {
                    n = 1;
                }
                self.pos += n;
                let v = self.input[start..self.pos].to_string();
                self.emit(Tok::Space, start, &v);
                continue;
            }
            match c {
                '=' => {
                    self.pos += 1;
                    self.emit(Tok::Assign, start, "=");
                }
                ':' => {
                    if !r.starts_with(":=") {
                        return self.err(start, "expected :=");
                    }
                    self.pos += 2;
                    self.emit(Tok::Declare, start, ":=");
                }
                '|' => {
                    self.pos += 1;
                    self.emit(Tok::Pipe, start, "|");
                }
                '"' => {
                    let mut esc = false;
                    let mut end = None;
                    for (i, ch) in r.char_indices().skip(1) {
                        if esc {
                            if ch == '\n' {
                                return self.err(start, "unterminated quoted string");
                            }
                            esc = false;
                        } else if ch == '\\' {
                            esc = true;
                        } else if ch == '\n' {
                            return self.err(start, "unterminated quoted string");
                        } else if ch == '"' {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    let Some(e) = end else {
                        return self.err(start, "unterminated quoted string");
                    };
                    self.pos += e;
                    let v = self.input[start..self.pos].to_string();
                    self.emit(Tok::String, start, &v);
                }
                '`' => {
                    let Some(e) = r[1..].find('`') else {
                        return self.err(start, "unterminated raw quoted string");
                    };
                    self.pos += e + 2;
                    let v = self.input[start..self.pos].to_string();
                    self.emit(Tok::RawString, start, &v);
                }
                '\'' => {
                    let mut esc = false;
                    let mut end = None;
                    for (i, ch) in r.char_indices().skip(1) {
                        if esc {
                            esc = false;
                        } else if ch == '\\' {
                            esc = true;
                        } else if ch == '\n' {
                            break;
                        } else if ch == '\'' {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    let Some(e) = end else {
                        return self.err(start, "unterminated character constant");
                    };
                    self.pos += e;
                    let v = self.input[start..self.pos].to_string();
                    self.emit(Tok::CharConstant, start, &v);
                }
                '$' => {
                    let n = r[1..]
                        .find(|ch: char| !is_alnum(ch))
                        .map(|n| n + 1)
                        .unwrap_or(r.len());
                    self.pos += n;
                    let v = self.input[start..self.pos].to_string();
                    self.check_terminator()?;
                    self.emit(Tok::Variable, start, &v);
                }
                '.' => {
                    if r[1..].starts_with(|ch: char| ch.is_ascii_digit()) {
                        self.number(start)?;
                        continue;
                    }
                    let n = r[1..]
                        .find(|ch: char| !is_alnum(ch))
                        .map(|n| n + 1)
                        .unwrap_or(r.len());
                    self.pos += n;
                    if n == 1 {
                        self.check_terminator()?;
                        self.emit(Tok::Dot, start, ".");
                    } else {
                        let v = self.input[start..self.pos].to_string();
                        self.check_terminator()?;
                        self.emit(Tok::Field, start, &v);
                    }
                }
                '+' | '-' | '0'..='9' => self.number(start)?,
                '(' => {
                    self.pos += 1;
                    self.paren_depth += 1;
                    self.emit(Tok::LeftParen, start, "(");
                }
                ')' => {
                    self.pos += 1;
                    self.paren_depth -= 1;
                    if self.paren_depth < 0 {
                        return self.err(start, "unexpected right paren");
                    }
                    self.emit(Tok::RightParen, start, ")");
                }
                c if is_alnum(c) => {
                    let n = r.find(|ch: char| !is_alnum(ch)).unwrap_or(r.len());
                    self.pos += n;
                    let word = self.input[start..self.pos].to_string();
                    self.check_terminator()?;
                    let tok = match word.as_str() {
                        "block" => Tok::Block,
                        "break" => Tok::Break,
                        "continue" => Tok::Continue,
                        "define" => Tok::Define,
                        "else" => Tok::Else,
                        "end" => Tok::End,
                        "if" => Tok::If,
                        "range" => Tok::Range,
                        "template" => Tok::Template,
                        "with" => Tok::With,
                        "nil" => Tok::Nil,
                        "true" | "false" => Tok::Bool,
                        _ => Tok::Identifier,
                    };
                    self.emit(tok, start, &word);
                }
                c if c.is_ascii() && !c.is_ascii_control() => {
                    self.pos += 1;
                    self.emit(Tok::Char, start, &c.to_string());
                }
                c => {
                    return self.err(
                        start,
                        format!("unrecognized character in action: {}", go_rune(c)),
                    );
                }
            }
        }
    }

    fn check_terminator(&self) -> Result<(), LexError> {
        let r = self.rest();
        match r.chars().next() {
            None => Ok(()),
            Some(c) if is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(') => Ok(()),
            Some(_) if r.starts_with(RIGHT) => Ok(()),
            Some(c) => self.err(self.pos, format!("bad character {}", go_rune(c))),
        }
    }

    fn number(&mut self, start: usize) -> Result<(), LexError> {
        let r = self.rest();
        let b = r.as_bytes();
        let mut i = 0;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        if i + 1 < b.len() && b[i] == b'0' {
            match b[i + 1] {
                b'x' | b'X' => {
                    i += 2;
                    digits = b"0123456789abcdefABCDEF_";
                }
                b'o' | b'O' => {
                    i += 2;
                    digits = b"01234567_";
                }
                b'b' | b'B' => {
                    i += 2;
                    digits = b"01_";
                }
                _ => {}
            }
        }
        while i < b.len() && digits.contains(&b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && digits.contains(&b[i]) {
                i += 1;
            }
        }
        let hex = digits.len() > 15;
        if i < b.len()
            && ((!hex && (b[i] == b'e' || b[i] == b'E')) || (hex && (b[i] == b'p' || b[i] == b'P')))
        {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            while i < b.len() && b"0123456789_".contains(&b[i]) {
                i += 1;
            }
        }
        if i < b.len() && b[i] == b'i' {
            i += 1;
        }
        let bad = i < b.len() && is_alnum(r[i..].chars().next().unwrap_or(' '));
        if bad || i == 0 || (i == 1 && (b[0] == b'+' || b[0] == b'-')) {
            let mut j = i;
            while j < b.len() && is_alnum(r[j..].chars().next().unwrap_or(' ')) {
                j += r[j..].chars().next().map(|c| c.len_utf8()).unwrap_or(1);
            }
            let j = j.max(i + 1).min(r.len());
            return self.err(start, format!("bad number syntax: {:?}", &r[..j]));
        }
        self.pos += i;
        let v = self.input[start..self.pos].to_string();
        self.emit(Tok::Number, start, &v);
        Ok(())
    }
}

/// Go's %#U rendering of a rune.
pub fn go_rune(c: char) -> String {
    format!("U+{:04X} '{}'", c as u32, c)
}
