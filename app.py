"""Streamlit entry: page config, navigation over pages/, the shared sidebar."""

import streamlit as st

st.set_page_config(page_title="enrich", page_icon="📈", layout="wide")
st.title("enrich")
st.info("The dashboard is being built. Meanwhile: `python -m enrich run` and "
        "`python -m enrich status`.")
