//! A port of the column layout of Go's `text/tabwriter`, which kubectl uses
//! for both `get` tables and `describe` text.
//!
//! Text is split into lines and each line into cells at tab characters. Every
//! cell that is terminated by a tab belongs to a column; the text after the
//! last tab of a line does not, and is written as it is. A *column block* is a
//! run of consecutive lines that all have a tab-terminated cell in that
//! column; every cell of a block is padded to the block's widest cell plus
//! `padding`, and to at least `min_width`. A line with fewer cells ends the
//! block, which is why `describe` sections separated by a header line without
//! a tab are aligned independently.

/// Lay out `text` (lines separated by `\n`, cells by `\t`) the way Go's
/// `tabwriter.NewWriter(out, min_width, _, padding, ' ', 0)` does. Widths are
/// counted in characters. Every output line ends with `\n`.
pub(crate) fn tabwrite(text: &str, min_width: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_terminator('\n')
        .map(|l| l.split('\t').collect())
        .collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    let layout = Layout {
        lines: &lines,
        min_width,
        padding,
    };
    layout.format(0, lines.len(), &mut widths, &mut out);
    out
}

/// The lines being laid out and the writer's settings.
struct Layout<'a> {
    lines: &'a [Vec<&'a str>],
    min_width: usize,
    padding: usize,
}

impl Layout<'_> {
    /// Whether line `i` has a tab-terminated cell in `column`.
    fn has_cell(&self, i: usize, column: usize) -> bool {
        column + 1 < self.lines[i].len()
    }

    /// Write lines `line0..line1`, whose columns before `widths.len()` are
    /// already sized, finding the blocks of the next column recursively.
    fn format(&self, mut line0: usize, line1: usize, widths: &mut Vec<usize>, out: &mut String) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if !self.has_cell(this, column) {
                this += 1;
                continue;
            }
            self.write_lines(line0, this, widths, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 && self.has_cell(this, column) {
                let w = self.lines[this][column].chars().count() + self.padding;
                width = width.max(w);
                this += 1;
            }
            widths.push(width);
            self.format(line0, this, widths, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(line0, line1, widths, out);
    }

    /// Write lines `from..to`, padding each cell that has a known width.
    fn write_lines(&self, from: usize, to: usize, widths: &[usize], out: &mut String) {
        for line in &self.lines[from..to] {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if let Some(&w) = widths.get(j) {
                    let n = cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', w.saturating_sub(n)));
                }
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tabwrite;

    #[test]
    fn pads_to_widest_cell_plus_padding_and_leaves_last_cell() {
        let got = tabwrite("NAME\tAGE\nlonger-name\t5s\n", 6, 3);
        assert_eq!(got, "NAME          AGE\nlonger-name   5s\n");
    }

    #[test]
    fn minimum_width_applies() {
        assert_eq!(tabwrite("a\tb\n", 6, 3), "a     b\n");
    }

    #[test]
    fn a_line_without_tab_ends_the_block() {
        let got = tabwrite(
            "Name:\tx\nSection:\n  Longer key:\tv\nEvents:\t<none>\n",
            0,
            2,
        );
        assert_eq!(
            got,
            "Name:  x\nSection:\n  Longer key:  v\nEvents:        <none>\n"
        );
    }

    #[test]
    fn nested_columns_only_span_lines_that_have_them() {
        let got = tabwrite("Port:\t<unset>\t80/TCP\nTargetPort:\t8080/TCP\n", 0, 2);
        assert_eq!(got, "Port:        <unset>  80/TCP\nTargetPort:  8080/TCP\n");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(tabwrite("é\tx\nab\ty\n", 0, 1), "é  x\nab y\n");
    }
}
