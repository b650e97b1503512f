"""bench/pages.py's reference: a Streamlit page that draws only a title."""

import streamlit as st

st.set_page_config(page_title="reference", layout="wide")
st.title("Reference")
