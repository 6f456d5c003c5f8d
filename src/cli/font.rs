//! A 5×7 bitmap font for the few words the side-by-side PNGs carry (no font file needed).

/// Glyph rows, `#` = ink; characters not listed are drawn as a space.
fn glyph(c: char) -> Option<[&'static str; 7]> {
    Some(match c {
        '0' => [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
        '1' => ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        '2' => [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
        '3' => ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
        '4' => ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
        '5' => ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
        '6' => ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
        '7' => ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
        '8' => [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
        '9' => [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
        '.' => ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
        '-' => ["     ", "     ", "     ", " ### ", "     ", "     ", "     "],
        'a' => ["     ", "     ", " ### ", "    #", " ####", "#   #", " ####"],
        'b' => ["#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#### "],
        'c' => ["     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### "],
        'd' => ["    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####"],
        'e' => ["     ", "     ", " ### ", "#   #", "#####", "#    ", " ### "],
        'g' => ["     ", " ####", "#   #", "#   #", " ####", "    #", " ### "],
        'i' => ["  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### "],
        'l' => [" ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
        'n' => ["     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #"],
        'o' => ["     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### "],
        'p' => ["     ", "     ", "#### ", "#   #", "#### ", "#    ", "#    "],
        'r' => ["     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    "],
        's' => ["     ", "     ", " ####", "#    ", " ### ", "    #", "#### "],
        't' => [" #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## "],
        'u' => ["     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #"],
        ',' => ["     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "],
        'P' => ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
        'S' => [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
        'N' => ["#   #", "##  #", "# # #", "# # #", "#  ##", "#   #", "#   #"],
        'R' => ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
        'B' => ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
        _ => return None,
    })
}

/// Height of a line of text at scale 1, in pixels (7 rows and a gap).
pub const LINE: usize = 8;
/// Width of a character at scale 1 (5 columns and a gap).
pub const ADVANCE: usize = 6;

/// Draws `text` in white with its top-left corner at `x, y`, each font pixel `scale × scale`;
/// what falls outside the image is clipped.
pub fn draw(img: &mut gddcm::data::Image, x: usize, y: usize, text: &str, scale: usize) {
    let (h, w) = (img.height, img.width);
    for (i, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (r, row) in rows.iter().enumerate() {
            for (col, b) in row.bytes().enumerate() {
                if b != b'#' {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x + (i * ADVANCE + col) * scale + dx, y + r * scale + dy);
                        if px < w && py < h {
                            for ch in 0..img.channels {
                                img.data[(ch * h + py) * w + px] = 255;
                            }
                        }
                    }
                }
            }
        }
    }
}
