//! Colour maps for pictures of values (heat maps, attributions, colour bars).

/// The viridis colour map at `x ∈ [0, 1]` (piecewise linear through nine of its
/// colours); values outside are clamped, NaN is the low end.
///
/// ```
/// use tessera_data::viridis;
/// assert_eq!(viridis(0.0), [0.267, 0.005, 0.329]);
/// assert_eq!(viridis(2.0), viridis(1.0));
/// ```
pub fn viridis(x: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 9] = [
        [0.267, 0.005, 0.329],
        [0.283, 0.141, 0.458],
        [0.254, 0.265, 0.530],
        [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558],
        [0.128, 0.567, 0.551],
        [0.135, 0.659, 0.518],
        [0.267, 0.749, 0.441],
        [0.993, 0.906, 0.144],
    ];
    let x = if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = x * (STOPS.len() - 1) as f32;
    let i = (f as usize).min(STOPS.len() - 2);
    let u = f - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| a[c] + u * (b[c] - a[c]))
}
